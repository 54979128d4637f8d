package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// shopPackage is the import path of the shop services; each service is a main package under it.
const shopPackage = "github.com/cloudchassis/kit/examples/shop/"

// services are the shop's services, callees first: that is the order they start in, so that the
// gateway finds its dependencies at once.
var services = []string{"catalog", "pricing", "cart", "gateway"}

// build compiles every service binary once into dir with one go build (which shares the work of
// the common packages) and returns their paths by service.
func build(ctx context.Context, goTool, dir string) (map[string]string, error) {
	args := []string{"build", "-o", dir + string(os.PathSeparator)}
	for _, s := range services {
		args = append(args, shopPackage+s)
	}
	cmd := exec.CommandContext(ctx, goTool, args...)
	cmd.Env = os.Environ()
	if out, err := cmd.CombinedOutput(); err != nil {
		hint := ""
		if strings.Contains(string(out), "go.mod file not found") || strings.Contains(string(out), "no required module provides") {
			hint = "\n(run the launcher from inside the Chassis module, for example `go run ./examples/cluster` at its root)"
		}
		return nil, fmt.Errorf("go %s: %w\n%s%s", strings.Join(args, " "), err, out, hint)
	}
	bins := map[string]string{}
	for _, s := range services {
		bin := filepath.Join(dir, s)
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("built %s: %w", s, err)
		}
		bins[s] = bin
	}
	return bins, nil
}

// prebuilt returns the service binaries in dir, built earlier (by a test, say).
func prebuilt(dir string) (map[string]string, error) {
	bins := map[string]string{}
	for _, s := range services {
		bin := filepath.Join(dir, s)
		if fi, err := os.Stat(bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("-prebuilt %s: no executable %s", dir, s)
		}
		bins[s] = bin
	}
	return bins, nil
}
