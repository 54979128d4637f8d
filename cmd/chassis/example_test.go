package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// `chassis new` writes the repository and says what it did; -force is needed to write over it.
func Example_new() {
	tmp, _ := os.MkdirTemp("", "chassis-example")
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "cart")

	var out, errOut bytes.Buffer
	code := run([]string{"new", "-chassis-version", "v1.0.0", "-deps", "pricing", "example.com/shop/cart", dir}, &out, &errOut)
	fmt.Println("exit", code)
	fmt.Print(strings.ReplaceAll(out.String(), tmp+string(filepath.Separator), ""))

	code = run([]string{"new", "example.com/shop/cart", dir}, &out, &errOut)
	fmt.Println("again: exit", code)
	// Output:
	// exit 0
	// created cart/go.mod
	// created cart/main.go
	// created cart/handlers.go
	// created cart/handlers_test.go
	// created cart/README.md
	// created cart/Makefile
	// created cart/Dockerfile
	// created cart/.dockerignore
	// created cart/.gitignore
	// created cart/.github/workflows/ci.yml
	// created cart/deploy/kubernetes.yaml
	//
	// Done. Next:
	//   cd cart
	//   go mod tidy
	//   go run .        # serves :8080, health on :9090
	//   go test ./...
	// again: exit 1
}
