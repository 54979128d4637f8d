package main

import (
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
	"gopkg.in/yaml.v3"
)

// e2eVersion is the version under which the end-to-end test publishes this checkout to a file://
// module proxy: a pseudo-version of a commit that cannot exist (year 2000, revision e2e and 9 random
// hex digits), so that its entry in the module cache, removed afterwards, can never be mistaken for
// a real one. It is new on every run: the go command takes a module version's content as immutable
// and caches what it read of it (the module index, in the build cache, which unpublish does not
// clear), so a fixed version would let one run build against an earlier checkout's file lists.
var e2eVersion = fmt.Sprintf("v0.0.0-20000101000000-e2e%09x", rand.Uint64()&(1<<36-1))

// ciAndImage builds and tests the generated repository in dir as its CI workflow and Dockerfile do:
// from what git would commit (no go.work), with the Chassis version go.mod requires fetched from a
// module proxy. The module is not published, so the proxy is a file:// one holding this checkout
// (root) under e2eVersion, in front of the local module cache. Docker is not needed: the build
// stage's instructions run as shell commands in a copy of the build context.
func ciAndImage(ctx context.Context, t *testing.T, root, dir string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.Parse("go.mod", b, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A -grpc project also requires grpc and protobuf, which its own code imports.
	others := map[string]string{"google.golang.org/grpc": grpcVersion, "google.golang.org/protobuf": protobufVersion}
	for _, r := range mf.Require {
		if r.Mod.Path != chassisModule && others[r.Mod.Path] != r.Mod.Version {
			t.Fatalf("go.mod requires %s:\n%s", r.Mod, b)
		}
	}
	if len(mf.Replace) != 0 || !slices.ContainsFunc(mf.Require, func(r *modfile.Require) bool {
		return r.Mod == module.Version{Path: chassisModule, Version: e2eVersion}
	}) {
		t.Fatalf("go.mod must require %s %s and replace nothing:\n%s", chassisModule, e2eVersion, b)
	}
	proxy := publish(t, root, e2eVersion)
	out, err := exec.CommandContext(ctx, "go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	cache := strings.TrimSpace(string(out))
	t.Cleanup(func() { unpublish(t, cache, e2eVersion) })
	upstream, err := exec.CommandContext(ctx, "go", "env", "GOPROXY").Output()
	if err != nil {
		t.Fatal(err)
	}
	// The fake version from its file proxy; the rest from the shared module cache (so that the
	// dependencies' builds are cached), and what a fresh machine's cache lacks (go mod tidy wants
	// the test dependencies of dependencies, which building the checkout never fetched) from the
	// proxy the user's go command uses, as the generated CI would. -modcacherw so that unpublish
	// can remove the fake version.
	env := append(os.Environ(),
		"GOPROXY=file://"+filepath.ToSlash(proxy)+",file://"+filepath.ToSlash(filepath.Join(cache, "cache", "download"))+
			","+strings.TrimSpace(string(upstream)),
		"GOFLAGS=-modcacherw", "GOSUMDB=off", "GOWORK=")
	sh := func(dir, script string, extra ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "sh", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(append([]string{}, env...), extra...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		return string(out)
	}

	// What the CLI tells the user to do once the version is published: go mod tidy, commit go.sum.
	sh(dir, "go mod tidy")
	sh(dir, "git init -q && git add -A")
	clone := t.TempDir()
	for _, f := range strings.Split(strings.TrimSpace(sh(dir, "git ls-files")), "\n") {
		if f == "go.work" || f == "go.work.sum" {
			t.Fatalf("git would commit %s", f)
		}
		copyFile(t, filepath.Join(dir, f), filepath.Join(clone, f))
	}
	if _, err := os.Stat(filepath.Join(clone, "go.sum")); err != nil {
		t.Fatal("go.sum is not committed")
	}

	// CI: the test job's steps, with the workflow's environment.
	b, err = os.ReadFile(filepath.Join(clone, ".github", "workflows", "ci.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var wf workflow
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatal(err)
	}
	var wfEnv []string
	for k, v := range wf.Env {
		wfEnv = append(wfEnv, k+"="+v)
	}
	for _, run := range wf.runs("test") {
		sh(clone, run, wfEnv...)
	}

	// The image: the build context is the clone less .dockerignore; run the build stage.
	ignore, err := os.ReadFile(filepath.Join(clone, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	buildCtx := t.TempDir()
	err = filepath.WalkDir(clone, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(clone, p)
		if !dockerignored(t, ignore, filepath.ToSlash(rel)) {
			copyFile(t, p, filepath.Join(buildCtx, rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"go.work", "go.work.sum", ".git"} {
		if _, err := os.Stat(filepath.Join(buildCtx, f)); err == nil {
			t.Fatalf("%s is in the build context", f)
		}
	}
	df, err := os.ReadFile(filepath.Join(buildCtx, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	fsRoot := t.TempDir() // stands in for the build stage's file system: /src, /out
	work, stageEnv, binary := "/", []string{}, ""
	for _, in := range parseDockerfile(t, df) {
		if in.cmd == "FROM" && strings.Contains(in.args, "distroless") {
			break // the final stage only copies the binary: checked by TestDockerfile
		}
		switch in.cmd {
		case "FROM":
		case "ENV":
			stageEnv = append(stageEnv, in.args)
		case "WORKDIR":
			work = path.Join(work, in.args)
			if err := os.MkdirAll(filepath.Join(fsRoot, work), 0o755); err != nil {
				t.Fatal(err)
			}
		case "COPY":
			args := strings.Fields(in.args)
			for _, src := range args[:len(args)-1] {
				dst := filepath.Join(fsRoot, work, args[len(args)-1])
				if src == "." {
					copyTree(t, buildCtx, dst)
					continue
				}
				copyFile(t, filepath.Join(buildCtx, src), filepath.Join(dst, filepath.Base(src)))
			}
		case "RUN":
			// Absolute paths of the stage are under fsRoot here.
			script := regexp.MustCompile(`(\s)/out/`).ReplaceAllString(in.args, "${1}"+filepath.Join(fsRoot, "out")+"/")
			if m := regexp.MustCompile(`-o (\S+)`).FindStringSubmatch(script); m != nil {
				binary = m[1]
			}
			sh(filepath.Join(fsRoot, work), script, stageEnv...)
		default:
			t.Fatalf("build stage: %s is not simulated", in.cmd)
		}
	}
	checkStaticBinary(t, binary)
}

// publish writes a file:// module proxy serving the module in root as chassisModule@version.
func publish(t *testing.T, root, version string) string {
	t.Helper()
	proxy := t.TempDir()
	esc, err := module.EscapePath(chassisModule)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(proxy, filepath.FromSlash(esc), "@v")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := json.Marshal(map[string]string{"Version": version, "Time": "2026-01-01T00:00:00Z"})
	for name, b := range map[string][]byte{"list": []byte(version + "\n"), version + ".mod": mod, version + ".info": info} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(filepath.Join(dir, version+".zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := zip.CreateFromDir(f, module.Version{Path: chassisModule, Version: version}, root); err != nil {
		t.Fatalf("module zip of %s: %v", root, err)
	}
	return proxy
}

// checkStaticBinary checks what the distroless static base needs: no dynamic loader, and a build
// with CGO_ENABLED=0 and -trimpath as the Dockerfile says.
func checkStaticBinary(t *testing.T, binary string) {
	t.Helper()
	if binary == "" {
		t.Fatal("the build stage has no go build -o")
	}
	f, err := elf.Open(binary)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked: it will not start on distroless/static")
		}
	}
	bi, err := buildinfo.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings %v", settings)
	}
	for _, d := range bi.Deps {
		if d.Path == chassisModule && d.Replace != nil {
			t.Errorf("the image's binary replaces %s with %s", chassisModule, d.Replace.Path)
		}
	}
}

// unpublish removes version of chassisModule from the module cache.
func unpublish(t *testing.T, cache, version string) {
	t.Helper()
	esc, _ := module.EscapePath(chassisModule)
	dl := filepath.Join(cache, "cache", "download", filepath.FromSlash(esc), "@v")
	files, _ := filepath.Glob(filepath.Join(dl, version+".*"))
	extracted := filepath.Join(cache, filepath.FromSlash(esc)+"@"+version)
	for _, f := range append(files, extracted) {
		if err := os.RemoveAll(f); err != nil {
			t.Errorf("removing the test's fake %s %s from the module cache: %v", chassisModule, version, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dl, "list")); err == nil {
		var keep []string
		for _, v := range strings.Fields(string(b)) {
			if v != version {
				keep = append(keep, v)
			}
		}
		if len(keep) == 0 {
			_ = os.Remove(filepath.Join(dl, "list"))
		} else if err := os.WriteFile(filepath.Join(dl, "list"), []byte(strings.Join(keep, "\n")+"\n"), 0o644); err != nil {
			t.Error(err)
		}
	}
	// The directories, if nothing else is in them (os.Remove fails on a non-empty one).
	for d := dl; d != filepath.Join(cache, "cache", "download"); d = filepath.Dir(d) {
		_ = os.Remove(d)
	}
	for d := filepath.Dir(extracted); d != cache; d = filepath.Dir(d) {
		_ = os.Remove(d)
	}
}

// copyTree copies the files under from into to, overwriting, as COPY . does.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		copyFile(t, p, filepath.Join(to, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
