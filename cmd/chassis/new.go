package main

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"go/format"
	"go/version"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

// minGoVersion is the go directive of github.com/cloudchassis/kit: generated modules need at least
// this (a test keeps it in step with go.mod).
const minGoVersion = "1.26.7"

//go:embed templates
var templates embed.FS

// file is one generated file: a template and where its output goes in the repository.
type file struct {
	tmpl string             // under templates/; without the .tmpl suffix, copied as it is
	out  string             // slash-separated, relative to the repository root
	when func(project) bool // nil: always generated
}

// localCheckout reports whether the project develops against a local Chassis checkout.
func localCheckout(p project) bool { return p.ChassisReplace != "" }

// withGRPC reports whether the project serves a gRPC API (-grpc).
func withGRPC(p project) bool { return p.GRPC }

// files lists the generated repository. Templates have neutral names (no leading dot, .tmpl suffix)
// so that embed keeps them and tools do not take them for real Go files or workflows.
var files = []file{
	{"go.mod.tmpl", "go.mod", nil},
	{"main.go.tmpl", "main.go", nil},
	{"handlers.go.tmpl", "handlers.go", nil},
	{"handlers_test.go.tmpl", "handlers_test.go", nil},
	{"README.md.tmpl", "README.md", nil},
	{"Makefile.tmpl", "Makefile", nil},
	{"Dockerfile.tmpl", "Dockerfile", nil},
	{"dockerignore.tmpl", ".dockerignore", nil},
	{"gitignore.tmpl", ".gitignore", nil},
	{"github/workflows/ci.yml.tmpl", ".github/workflows/ci.yml", nil},
	{"deploy/kubernetes.yaml.tmpl", "deploy/kubernetes.yaml", nil},
	// -grpc: the API, its generated Go code and buf's configuration to regenerate it. The generated
	// code is the same for every project (the .proto has no go_package; buf.gen.yaml maps it), so
	// it is copied from templates/greeterpb, a package of this module that is compiled and tested
	// with it (TestGreeterpb).
	{"grpc.go.tmpl", "grpc.go", withGRPC},
	{"grpc_test.go.tmpl", "grpc_test.go", withGRPC},
	{"proto/greeter/v1/greeter.proto", "proto/greeter/v1/greeter.proto", withGRPC},
	{"greeterpb/greeter.pb.go", "greeterpb/greeter.pb.go", withGRPC},
	{"greeterpb/greeter_grpc.pb.go", "greeterpb/greeter_grpc.pb.go", withGRPC},
	{"buf.yaml.tmpl", "buf.yaml", withGRPC},
	{"buf.gen.yaml.tmpl", "buf.gen.yaml", withGRPC},
	// -chassis-replace: the local checkout goes into go.work, which is git- and docker-ignored, so
	// go.mod stays publishable and CI and the image build with the version it requires.
	{"go.work.tmpl", "go.work", localCheckout},
	// go.work.sum (also ignored) is the checkout's go.sum: the workspace then verifies what the
	// checkout brings (consul/api, OTel, ...) by the checksums the checkout vouches for, without
	// the checksum database, which a closed network or a fresh machine's CI may not reach.
	{"", "go.work.sum", localCheckout},
}

// generated returns the files p's repository has.
func generated(p project) []file {
	var fs []file
	for _, f := range files {
		if f.when == nil || f.when(p) {
			fs = append(fs, f)
		}
	}
	return fs
}

// project is what the templates see.
type project struct {
	Module         string // module path
	Name           string // service name: a DNS label
	GoVersion      string // go directive
	GoMinor        string // major.minor, for the builder image tag
	ChassisModule  string
	ChassisVersion string // required version; "" leaves the requirement to `go mod tidy`
	ChassisReplace string // local checkout that go.work replaces the module with, or ""
	Deps           []dependency
	GRPC           bool   // serve the gRPC API of templates/proto (-grpc)
	GRPCVersion    string // google.golang.org/grpc version to require with GRPC
	ProtoVersion   string // google.golang.org/protobuf version to require with GRPC
}

// The versions of google.golang.org/grpc and google.golang.org/protobuf that a -grpc project
// requires, since its own code imports them: those of this module's go.mod (a test keeps them in
// step), which the committed generated code was made for.
const (
	grpcVersion     = "v1.83.2"
	protobufVersion = "v1.36.12"
)

// dependency is a service the generated one calls.
type dependency struct {
	Name  string // service name: "product-catalog"
	Field string // Go identifier: "ProductCatalog"
	Var   string // Go local variable: "productCatalog"
	Env   string // environment variable stem: "PRODUCT_CATALOG"
}

const newSynopsis = `Usage: chassis new [flags] <module-path> [dir]

Generates a service repository for module-path in dir (default: the last element of the module
path): main.go on chassis.Main with a config struct, a handler and its chassistest test, README,
Makefile, CI workflow, Dockerfile and Kubernetes manifests. With -grpc, the service also serves a
gRPC API: a .proto, its generated Go code (committed; make proto regenerates it with only Go
installed), the server registered on svc.GRPC() and its tests. Existing files are left alone
unless -force is given.

Examples:
  chassis new -deps pricing,catalog github.com/acme/orders
  chassis new -grpc github.com/acme/pricing`

// placeholderVersion is the conventional version of a replaced module, required when the version
// of a -chassis-replace checkout cannot be told.
const placeholderVersion = "v0.0.0-00010101000000-000000000000"

// newOptions are the flags of `chassis new`.
type newOptions struct {
	module, dir    string
	name           string
	deps           []string
	goVersion      string
	force          bool
	grpc           bool
	chassisReplace string
	chassisVersion string
}

func runNew(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("new", newSynopsis, stderr)
	var o newOptions
	var deps string
	fs.StringVar(&deps, "deps", "", "comma-separated `services` this one calls; each gets a pre-wired client, config and a test")
	fs.StringVar(&o.goVersion, "go", minGoVersion, "`version` for the go directive (at least "+minGoVersion+")")
	fs.StringVar(&o.name, "name", "", "service `name` (a DNS label); default: the last element of the module path")
	fs.BoolVar(&o.force, "force", false, "overwrite existing files")
	fs.BoolVar(&o.grpc, "grpc", false, "also serve a gRPC API: a .proto, its generated code, the server on svc.GRPC(), tests and make proto")
	fs.StringVar(&o.chassisReplace, "chassis-replace", "", "`path` of a local chassis checkout to build against, through a go.work file that git and docker ignore (go.mod then requires the checkout's commit)")
	fs.StringVar(&o.chassisVersion, "chassis-version", "", "`version` of "+chassisModule+" to require; default: this CLI's own")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch fs.NArg() {
	case 1:
		o.module = fs.Arg(0)
	case 2:
		o.module, o.dir = fs.Arg(0), fs.Arg(1)
	default:
		fs.Usage()
		return &usageError{}
	}
	if deps != "" {
		o.deps = strings.Split(deps, ",")
	}
	p, err := o.project()
	if err != nil {
		return &usageError{err.Error()}
	}
	if o.dir == "" {
		o.dir = p.Name
	}
	if err := generate(p, o.dir, o.force, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nDone. Next:\n  cd %s\n", o.dir)
	if p.ChassisReplace != "" {
		// go mod tidy ignores go.work: it would look the required version up on the proxy.
		fmt.Fprint(stdout, serves(p)+"  go test ./...\n")
		fmt.Fprintf(stdout, "\ngo.work builds against %s; git and docker ignore it, so CI and the image use\n"+
			"%s %s from go.mod. Once that version is published (the commit pushed),\n"+
			"run `go mod tidy` and commit go.sum.\n", p.ChassisReplace, p.ChassisModule, p.ChassisVersion)
		if p.ChassisVersion == placeholderVersion {
			fmt.Fprintf(stdout, "That version is a placeholder (the checkout's commit is unknown): set a published one\n"+
				"with `go mod edit -require=%s@<version>`.\n", p.ChassisModule)
		}
		return nil
	}
	if p.ChassisVersion == "" {
		fmt.Fprintf(stdout, "  go get %s@latest\n", p.ChassisModule)
	}
	fmt.Fprint(stdout, "  go mod tidy\n"+serves(p)+"  go test ./...\n")
	return nil
}

// serves is the `go run .` line of the next steps.
func serves(p project) string {
	if p.GRPC {
		return "  go run .        # serves :8080, gRPC on :9000, health on :9090\n"
	}
	return "  go run .        # serves :8080, health on :9090\n"
}

// dnsLabel is what Kubernetes and Consul accept as a service name.
var dnsLabel = regexp.MustCompile(`^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`)

// goVersionRE accepts release versions of the go directive: 1.26, 1.26.7.
var goVersionRE = regexp.MustCompile(`^1\.[0-9]+(\.[0-9]+)?$`)

// project validates the options and builds the template data. Its errors are the user's.
func (o newOptions) project() (project, error) {
	var errs []error
	if err := module.CheckPath(o.module); err != nil {
		errs = append(errs, fmt.Errorf("module path %q: %v", o.module, strings.TrimPrefix(err.Error(), "malformed module path \""+o.module+"\": ")))
	}
	name := o.name
	if name == "" && len(errs) == 0 {
		prefix, _, _ := module.SplitPathVersion(o.module)
		name = strings.ToLower(path.Base(prefix))
		if !dnsLabel.MatchString(name) {
			errs = append(errs, fmt.Errorf("service name %q (from the module path) is not a DNS label (a-z, 0-9, '-'); pass -name", name))
		}
	} else if name != "" && !dnsLabel.MatchString(name) {
		errs = append(errs, fmt.Errorf("-name %q: not a DNS label (lower-case letters, digits and '-', starting with a letter, at most 63)", name))
	}
	gv := o.goVersion
	switch {
	case !goVersionRE.MatchString(gv):
		errs = append(errs, fmt.Errorf("-go %q: not a Go release version such as %s", gv, minGoVersion))
	case version.Compare("go"+gv, "go"+minGoVersion) < 0:
		if version.Lang("go"+gv) != version.Lang("go"+minGoVersion) {
			errs = append(errs, fmt.Errorf("-go %s: %s needs Go %s or later", gv, chassisModule, minGoVersion))
		}
		gv = minGoVersion // same language version: raise the patch level the module requires
	}
	var deps []dependency
	for _, d := range o.deps {
		d = strings.TrimSpace(d)
		switch {
		case !dnsLabel.MatchString(d):
			errs = append(errs, fmt.Errorf("-deps: %q is not a service name (a DNS label: a-z, 0-9, '-')", d))
		case d == name:
			errs = append(errs, fmt.Errorf("-deps: %q is the service itself", d))
		case slices.ContainsFunc(deps, func(x dependency) bool { return x.Name == d }):
			errs = append(errs, fmt.Errorf("-deps: %q given twice", d))
		default:
			deps = append(deps, newDependency(d))
		}
	}
	for _, d := range deps {
		if d.Var == "svc" || d.Var == "cfg" || d.Field == "Greeting" || (o.grpc && (d.Var == "greeter" || d.Var == "greeterpb")) {
			errs = append(errs, fmt.Errorf("-deps: %q clashes with a name in the generated code; rename the dependency", d.Name))
		}
	}
	replace := o.chassisReplace
	if replace != "" {
		abs, err := filepath.Abs(replace)
		if err != nil {
			errs = append(errs, fmt.Errorf("-chassis-replace: %v", err))
		} else if _, err := os.Stat(filepath.Join(abs, "go.mod")); err != nil {
			errs = append(errs, fmt.Errorf("-chassis-replace %q: no go.mod there", replace))
		}
		replace = filepath.ToSlash(abs)
	}
	cv := o.chassisVersion
	if cv == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			cv = moduleVersion(bi)
		}
		if strings.Contains(cv, "+") { // +dirty, +incompatible: not something go.mod can require
			cv = ""
		}
		if cv == "" && replace != "" && len(errs) == 0 {
			// CI and the image build without go.work, so go.mod must require something the proxy
			// can serve: the checkout's commit. Without git, the conventional version of a replaced
			// module at least builds locally; the message after generation says to publish one.
			if cv, _ = checkoutVersion(replace); cv == "" {
				cv = placeholderVersion
			}
		}
	} else if err := module.Check(chassisModule, cv); err != nil {
		errs = append(errs, fmt.Errorf("-chassis-version %q: %v", cv, err))
	}
	if err := errors.Join(errs...); err != nil {
		return project{}, err
	}
	return project{
		Module: o.module, Name: name, GoVersion: gv, GoMinor: version.Lang("go" + gv)[2:],
		ChassisModule: chassisModule, ChassisVersion: cv, ChassisReplace: replace, Deps: deps,
		GRPC: o.grpc, GRPCVersion: grpcVersion, ProtoVersion: protobufVersion,
	}, nil
}

func newDependency(name string) dependency {
	parts := strings.Split(name, "-")
	var field strings.Builder
	for _, p := range parts {
		if p == "" {
			continue
		}
		field.WriteString(strings.ToUpper(p[:1]) + p[1:])
	}
	f := field.String()
	return dependency{
		Name:  name,
		Field: f,
		Var:   strings.ToLower(f[:1]) + f[1:],
		Env:   strings.ToUpper(strings.ReplaceAll(name, "-", "_")),
	}
}

// render executes every template; Go files go through go/format.
func render(p project) (map[string][]byte, error) {
	t, err := template.New("").Option("missingkey=error").ParseFS(templates, "templates/*.tmpl", "templates/*/*.tmpl", "templates/*/*/*.tmpl")
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	out := map[string][]byte{}
	for _, f := range generated(p) {
		if f.out == "go.work.sum" {
			b, err := os.ReadFile(filepath.Join(filepath.FromSlash(p.ChassisReplace), "go.sum"))
			if err != nil && !errors.Is(err, fs.ErrNotExist) { // a checkout without dependencies has none
				return nil, fmt.Errorf("-chassis-replace: %w", err)
			}
			out[f.out] = b
			continue
		}
		if !strings.HasSuffix(f.tmpl, ".tmpl") {
			b, err := templates.ReadFile(path.Join("templates", f.tmpl))
			if err != nil {
				return nil, err
			}
			out[f.out] = b
			continue
		}
		var b bytes.Buffer
		if err := t.ExecuteTemplate(&b, path.Base(f.tmpl), p); err != nil {
			return nil, fmt.Errorf("template %s: %w", f.tmpl, err)
		}
		content := b.Bytes()
		if strings.HasSuffix(f.out, ".go") {
			if content, err = format.Source(content); err != nil {
				return nil, fmt.Errorf("template %s produced invalid Go: %w", f.tmpl, err)
			}
		}
		out[f.out] = content
	}
	return out, nil
}

// ErrExists is returned when a file to generate already exists and -force was not given.
var ErrExists = errors.New("file exists")

// generate writes the repository into dir. Without force it checks every file first and writes
// nothing if any exists.
func generate(p project, dir string, force bool, stdout io.Writer) error {
	out, err := render(p)
	if err != nil {
		return err
	}
	todo := generated(p)
	if !force {
		var exist []string
		for _, f := range todo {
			if _, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(f.out))); err == nil {
				exist = append(exist, f.out)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		if len(exist) > 0 {
			return fmt.Errorf("%s: %w: %s (use -force to overwrite)", dir, ErrExists, strings.Join(exist, ", "))
		}
	}
	for _, f := range todo {
		target := filepath.Join(dir, filepath.FromSlash(f.out))
		verb := "created"
		if _, err := os.Lstat(target); err == nil {
			verb = "overwrote"
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(target, out[f.out], 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s\n", verb, target)
	}
	return nil
}

// checkoutVersion returns the version the Go proxy gives the commit checked out in dir: its tag
// when HEAD is tagged, otherwise its pseudo-version (based on the latest v0/v1 tag before it).
func checkoutVersion(dir string) (string, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	const tags = "v[01].*" // the module path has no /vN suffix
	if tag, err := git("describe", "--tags", "--exact-match", "--match", tags, "HEAD"); err == nil && semver.IsValid(tag) && semver.Build(tag) == "" {
		return tag, nil
	}
	info, err := git("log", "-1", "--format=%H %ct", "HEAD")
	if err != nil {
		return "", err
	}
	hash, secs, ok := strings.Cut(info, " ")
	ts, perr := strconv.ParseInt(secs, 10, 64)
	if !ok || perr != nil || len(hash) < 12 {
		return "", fmt.Errorf("git log: unexpected output %q", info)
	}
	older, _ := git("describe", "--tags", "--abbrev=0", "--match", tags, "HEAD") // none: v0.0.0-...
	if !semver.IsValid(older) || semver.Build(older) != "" {
		older = ""
	}
	return module.PseudoVersion("", older, time.Unix(ts, 0), hash[:12]), nil
}
