package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/mod/modfile"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cli runs the command line and returns its exit code and outputs.
func cli(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestExitCodesAndHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string // in stdout+stderr
	}{
		{nil, exitUsage, "Commands:"},
		{[]string{"-h"}, exitOK, "Commands:"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"new", "-h"}, exitOK, "-chassis-replace"},
		{[]string{"new"}, exitUsage, "Usage: chassis new"},
		{[]string{"new", "-nope", "x"}, exitUsage, "flag provided but not defined: -nope"},
		{[]string{"new", "a/b", "c", "d"}, exitUsage, "Usage: chassis new"},
		{[]string{"env", "-h"}, exitOK, "-markdown"},
		{[]string{"env", "extra"}, exitUsage, "unexpected arguments"},
		{[]string{"version", "-h"}, exitOK, "Usage: chassis version"},
		{[]string{"version"}, exitOK, "chassis "},
	} {
		code, out, errOut := cli(tc.args...)
		if code != tc.code || !strings.Contains(out+errOut, tc.want) {
			t.Errorf("chassis %q: exit %d (want %d), output lacks %q:\n%s%s", tc.args, code, tc.code, tc.want, out, errOut)
		}
	}
}

func TestEnvPrintsTheReference(t *testing.T) {
	code, out, _ := cli("env")
	if code != 0 || !strings.Contains(out, "ADMIN_PORT") || !strings.Contains(out, "DRAIN_DELAY") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	code, out, _ = cli("env", "-markdown")
	if code != 0 || !strings.Contains(out, "| `PORT`") && !strings.Contains(out, "|") {
		t.Fatalf("markdown: exit %d:\n%s", code, out)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"new", "not a module", dir}, `module path "not a module"`},
		{[]string{"new", "github.com/acme/Orders_Svc", dir}, `service name "orders_svc" (from the module path) is not a DNS label`},
		{[]string{"new", "-name", "Bad", "github.com/acme/x", dir}, `-name "Bad": not a DNS label`},
		{[]string{"new", "-deps", "pricing,Bad_Name", "github.com/acme/x", dir}, `-deps: "Bad_Name" is not a service name`},
		{[]string{"new", "-deps", "x", "github.com/acme/x", dir}, `-deps: "x" is the service itself`},
		{[]string{"new", "-deps", "a,a", "github.com/acme/x", dir}, `-deps: "a" given twice`},
		{[]string{"new", "-grpc", "-deps", "greeter", "github.com/acme/x", dir}, `-deps: "greeter" clashes with a name in the generated code`},
		{[]string{"new", "-go", "1.21", "github.com/acme/x", dir}, "-go 1.21: github.com/cloudchassis/kit needs Go " + minGoVersion},
		{[]string{"new", "-go", "latest", "github.com/acme/x", dir}, `-go "latest": not a Go release version`},
		{[]string{"new", "-chassis-replace", filepath.Join(dir, "nowhere"), "github.com/acme/x", dir}, "no go.mod there"},
		{[]string{"new", "-chassis-version", "main", "github.com/acme/x", dir}, `-chassis-version "main"`},
	} {
		code, _, errOut := cli(tc.args...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("chassis %q: exit %d, stderr lacks %q:\n%s", tc.args, code, tc.want, errOut)
		}
	}
	// Several problems are reported together.
	_, _, errOut := cli("new", "-go", "x", "-deps", "B", "bad path", dir)
	if strings.Count(errOut, "\n") < 3 {
		t.Errorf("want every problem at once:\n%s", errOut)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a rejected command wrote files: %v", entries)
	}
}

func TestNewWritesAndRefusesToOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "svc")
	code, out, errOut := cli("new", "-chassis-version", "v1.2.3", "github.com/acme/orders/v2", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, f := range files {
		line := "created " + filepath.Join(dir, filepath.FromSlash(f.out)) + "\n"
		if want := f.when == nil; strings.Contains(out, line) != want {
			t.Errorf("progress line for %s: want %v:\n%s", f.out, want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
		t.Error("go.work written without -chassis-replace")
	}
	mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.Parse("go.mod", mod, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mf.Module.Mod.Path != "github.com/acme/orders/v2" || mf.Go.Version != minGoVersion ||
		len(mf.Require) != 1 || mf.Require[0].Mod.Version != "v1.2.3" {
		t.Errorf("go.mod:\n%s", mod)
	}
	// The service is named after the path without its major version.
	if main, _ := os.ReadFile(filepath.Join(dir, "main.go")); !bytes.Contains(main, []byte(`chassis.Main("orders"`)) {
		t.Errorf("main.go does not name the service orders:\n%s", main)
	}

	// A second run refuses, names the files, and changes nothing.
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main // mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = cli("new", "github.com/acme/orders/v2", dir)
	if code != exitFailure || !strings.Contains(errOut, "main.go") || !strings.Contains(errOut, "use -force") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "main.go")); string(b) != "package main // mine\n" {
		t.Fatal("main.go overwritten without -force")
	}
	code, out, _ = cli("new", "-force", "-chassis-version", "v1.2.3", "github.com/acme/orders/v2", dir)
	if code != 0 || !strings.Contains(out, "overwrote "+filepath.Join(dir, "main.go")) {
		t.Fatalf("-force: exit %d:\n%s", code, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "main.go")); strings.Contains(string(b), "mine") {
		t.Fatal("-force did not overwrite main.go")
	}
}

func TestNewGoVersion(t *testing.T) {
	for in, want := range map[string]string{"1.26": minGoVersion, "1.27": "1.27", "1.26.9": "1.26.9"} {
		p, err := newOptions{module: "example.com/x", goVersion: in}.project()
		if err != nil || p.GoVersion != want {
			t.Errorf("-go %s: %q %v, want %q", in, p.GoVersion, err, want)
		}
	}
}

// minGoVersion must follow the root module's go directive, which generated modules inherit, and
// the grpc and protobuf versions that -grpc projects require its requirements, which the generated
// code in templates/greeterpb is compiled and tested with here.
func TestMinGoVersionMatchesGoMod(t *testing.T) {
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.Parse("go.mod", b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mf.Go.Version != minGoVersion {
		t.Fatalf("minGoVersion = %s, go.mod says go %s: update minGoVersion", minGoVersion, mf.Go.Version)
	}
	want := map[string]string{"google.golang.org/grpc": grpcVersion, "google.golang.org/protobuf": protobufVersion}
	for _, r := range mf.Require {
		if v, ok := want[r.Mod.Path]; ok {
			if r.Mod.Version != v {
				t.Errorf("go.mod requires %s, new.go says %s: update grpcVersion/protobufVersion", r.Mod, v)
			}
			delete(want, r.Mod.Path)
		}
	}
	if len(want) != 0 {
		t.Errorf("go.mod does not require %v", want)
	}
}

func TestDependencyNames(t *testing.T) {
	d := newDependency("product-catalog")
	if d.Field != "ProductCatalog" || d.Var != "productCatalog" || d.Env != "PRODUCT_CATALOG" {
		t.Fatalf("%+v", d)
	}
}
