package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"gopkg.in/yaml.v3"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// parseDockerfile splits a Dockerfile into instructions. It knows the instructions of the Dockerfile
// reference and fails on any other, so a typo in the template fails here rather than in a build.
func parseDockerfile(t *testing.T, b []byte) []instruction {
	t.Helper()
	known := map[string]bool{"FROM": true, "RUN": true, "CMD": true, "LABEL": true, "EXPOSE": true, "ENV": true,
		"ADD": true, "COPY": true, "ENTRYPOINT": true, "VOLUME": true, "USER": true, "WORKDIR": true, "ARG": true,
		"ONBUILD": true, "STOPSIGNAL": true, "HEALTHCHECK": true, "SHELL": true}
	var out []instruction
	var cur string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if rest, ok := strings.CutSuffix(line, `\`); ok {
			cur += rest + " "
			continue
		}
		cur += line
		cmd, args, _ := strings.Cut(cur, " ")
		cur = ""
		if !known[strings.ToUpper(cmd)] {
			t.Fatalf("Dockerfile: unknown instruction %q", cmd)
		}
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
	}
	if cur != "" {
		t.Fatal("Dockerfile ends in a continuation line")
	}
	return out
}

// dockerignored reports whether .dockerignore's patterns exclude rel (slash-separated). It supports
// what the template uses (names, globs, trailing slashes) and fails on the rest of the syntax.
func dockerignored(t *testing.T, patterns []byte, rel string) bool {
	t.Helper()
	ignored := false
	for _, p := range strings.Split(string(patterns), "\n") {
		p = strings.TrimSpace(p)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		if strings.HasPrefix(p, "!") || strings.Contains(p, "**") {
			t.Fatalf(".dockerignore: %q: the test does not implement this syntax", p)
		}
		p = strings.TrimSuffix(path.Clean(p), "/")
		// A pattern matches the path or any directory above it.
		for q := rel; q != "." && q != "/"; q = path.Dir(q) {
			if ok, err := path.Match(p, q); err != nil {
				t.Fatalf(".dockerignore: %q: %v", p, err)
			} else if ok {
				ignored = true
			}
		}
	}
	return ignored
}

// TestDockerfile checks the Dockerfile against the repository it is generated with: known
// instructions, COPY sources inside the build context and not .dockerignore'd, the binary the build
// stage writes is the one the final stage copies and runs, and it is static (the base has no libc).
func TestDockerfile(t *testing.T) {
	for name, o := range goldenCases {
		t.Run(name, func(t *testing.T) {
			p, _ := o.project()
			out, err := render(p)
			if err != nil {
				t.Fatal(err)
			}
			ins := parseDockerfile(t, out["Dockerfile"])
			var froms, built, copied, entry string
			env := map[string]string{}
			for _, in := range ins {
				switch in.cmd {
				case "FROM":
					froms += in.args + ";"
				case "ENV":
					k, v, _ := strings.Cut(in.args, "=")
					env[k] = v
				case "COPY":
					args := strings.Fields(in.args)
					if strings.HasPrefix(args[0], "--from=") {
						copied = args[1]
						continue
					}
					for _, src := range args[:len(args)-1] {
						clean := path.Clean(src)
						if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
							t.Errorf("COPY %s: outside the build context", src)
						}
						if clean == "." {
							continue
						}
						// go.sum comes from `go mod tidy`, which the generated README and CLI ask for.
						if _, ok := out[clean]; !ok && clean != "go.sum" {
							t.Errorf("COPY %s: not a generated file", src)
						}
						if dockerignored(t, out[".dockerignore"], clean) {
							t.Errorf("COPY %s: excluded by .dockerignore", src)
						}
					}
				case "RUN":
					if m := regexp.MustCompile(`go build .*-o (\S+)`).FindStringSubmatch(in.args); m != nil {
						built = m[1]
						for _, want := range []string{"CGO_ENABLED=0", "-trimpath"} {
							if !strings.Contains(in.args, want) {
								t.Errorf("go build without %s: %s", want, in.args)
							}
						}
					}
				case "ENTRYPOINT":
					entry = in.args
				}
			}
			if want := "golang:" + p.GoMinor + " AS build;gcr.io/distroless/static-debian12:nonroot;"; froms != want {
				t.Errorf("stages %q, want %q", froms, want)
			}
			if env["GOWORK"] != "off" {
				t.Error("the build stage must not pick up a go.work")
			}
			if built == "" || copied != built || entry != `["/`+p.Name+`"]` {
				t.Errorf("go build -o %q, COPY --from=build %q, ENTRYPOINT %s", built, copied, entry)
			}
			// The local-development files never reach the image, whatever the case generates.
			for _, f := range []string{"go.work", "go.work.sum", ".env", ".git/config"} {
				if !dockerignored(t, out[".dockerignore"], f) {
					t.Errorf(".dockerignore lets %s into the build context", f)
				}
			}
		})
	}
}

// TestImageReferenceAgrees runs the generated Makefile: the image `make docker` builds (and CI, which
// runs `make docker`) is the one `make manifests`/`make deploy` put into the Kubernetes manifest.
func TestImageReferenceAgrees(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	p, _ := goldenCases["deps"].project()
	out, err := render(p)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() // not a git repository: VERSION falls back to dev
	for f, b := range out {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("make", append([]string{"-s", "--no-print-directory"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CEILING_DIRECTORIES="+filepath.Dir(dir)) // no repository above it either
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("make %s: %v", strings.Join(args, " "), err)
		}
		return string(b)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "orders:dev"},
		{[]string{"VERSION=v1.4.0"}, "orders:v1.4.0"},
		{[]string{"IMAGE_REPO=registry.example.com/team/orders", "VERSION=3f2a1b0"}, "registry.example.com/team/orders:3f2a1b0"},
	} {
		if got := strings.TrimSpace(mk(append([]string{"print-image"}, tc.args...)...)); got != tc.want {
			t.Errorf("make print-image %v = %q, want %q", tc.args, got, tc.want)
		}
		manifest := mk(append([]string{"manifests"}, tc.args...)...)
		dec := yaml.NewDecoder(strings.NewReader(manifest))
		var dep struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Image string `yaml:"image"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&dep); err != nil || dep.Kind != "Deployment" || len(dep.Spec.Template.Spec.Containers) != 1 {
			t.Fatalf("make manifests: %v %+v\n%s", err, dep, manifest)
		}
		if got := dep.Spec.Template.Spec.Containers[0].Image; got != tc.want {
			t.Errorf("make manifests %v: image %q, want %q", tc.args, got, tc.want)
		}
	}
	// Unfilled, the manifest names no image that could exist (no silent :latest).
	if !bytes.Contains(out["deploy/kubernetes.yaml"], []byte("image: ${IMAGE}")) {
		t.Errorf("deploy/kubernetes.yaml lacks the ${IMAGE} placeholder")
	}
	// The Makefile passes the tag's version into the image, where the service reports it.
	if mf := string(out["Makefile"]); !strings.Contains(mf, "docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .") {
		t.Errorf("make docker does not build $(IMAGE) with VERSION:\n%s", mf)
	}
}

// fakeChassis makes a git repository whose go.mod is the chassis module's, with one commit.
func fakeChassis(t *testing.T) (dir string, git func(args ...string) string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	dir = t.TempDir()
	git = func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com",
			"-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return strings.TrimSpace(string(b))
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module "+chassisModule+"\n\ngo "+minGoVersion+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("init", "-q")
	git("add", "go.mod")
	git("commit", "-q", "-m", "one")
	return dir, git
}

func TestCheckoutVersion(t *testing.T) {
	dir, git := fakeChassis(t)
	check := func(wantPrefix string) {
		t.Helper()
		v, err := checkoutVersion(dir)
		if err != nil {
			t.Fatal(err)
		}
		rev := git("rev-parse", "HEAD")[:12]
		if !strings.HasPrefix(v, wantPrefix) || !module.IsPseudoVersion(v) || !strings.HasSuffix(v, "-"+rev) {
			t.Errorf("version %q, want the pseudo-version %s...-%s", v, wantPrefix, rev)
		}
		if err := module.Check(chassisModule, v); err != nil {
			t.Error(err)
		}
	}
	check("v0.0.0-") // no tags
	git("tag", "v1.2.3")
	if v, err := checkoutVersion(dir); err != nil || v != "v1.2.3" {
		t.Errorf("tagged HEAD: %q %v, want v1.2.3", v, err)
	}
	git("commit", "-q", "--allow-empty", "-m", "two")
	check("v1.2.4-0.")   // after a tag
	git("tag", "v2.0.0") // not a version of this module path: ignored
	check("v1.2.4-0.")

	if _, err := checkoutVersion(t.TempDir()); err == nil {
		t.Error("a directory outside git: no error")
	}
}

// With -chassis-replace, go.mod stays publishable (no replace directive, a requirement the proxy can
// serve), and the checkout is wired through go.work, which git and docker ignore.
func TestNewChassisReplace(t *testing.T) {
	checkout, git := fakeChassis(t)
	dir := filepath.Join(t.TempDir(), "orders")
	code, out, errOut := cli("new", "-chassis-replace", checkout, "-deps", "pricing", "github.com/acme/orders", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.Parse("go.mod", b, nil)
	if err != nil {
		t.Fatal(err)
	}
	rev := git("rev-parse", "HEAD")[:12]
	if len(mf.Replace) != 0 || len(mf.Require) != 1 || mf.Require[0].Mod.Path != chassisModule ||
		!strings.HasSuffix(mf.Require[0].Mod.Version, "-"+rev) {
		t.Errorf("go.mod must require the checkout's commit and replace nothing:\n%s", b)
	}
	b, err = os.ReadFile(filepath.Join(dir, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	wf, err := modfile.ParseWork("go.work", b, nil)
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(checkout)
	if len(wf.Use) != 1 || wf.Use[0].Path != "." || len(wf.Replace) != 1 ||
		wf.Replace[0].Old.Path != chassisModule || wf.Replace[0].New.Path != filepath.ToSlash(abs) {
		t.Errorf("go.work:\n%s", b)
	}
	for _, f := range []string{".gitignore", ".dockerignore"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		lines := strings.Split(string(b), "\n")
		for _, want := range []string{"go.work", "go.work.sum"} {
			if !containsLine(lines, want) {
				t.Errorf("%s does not list %s", f, want)
			}
		}
	}
	// go mod tidy ignores go.work and would look an unpublished version up: not a first step here.
	next := out[strings.Index(out, "Done."):]
	if strings.Contains(next, "  go mod tidy\n") || !strings.Contains(next, "go.work builds against "+filepath.ToSlash(abs)) ||
		!strings.Contains(next, mf.Require[0].Mod.Version) {
		t.Errorf("next steps:\n%s", next)
	}
	if readme, _ := os.ReadFile(filepath.Join(dir, "README.md")); !bytes.Contains(readme, []byte("| `go.work` |")) {
		t.Error("README does not explain go.work")
	}
}

func containsLine(lines []string, s string) bool {
	for _, l := range lines {
		if strings.TrimSpace(l) == s {
			return true
		}
	}
	return false
}
