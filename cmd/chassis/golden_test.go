package main

import (
	"bytes"
	"flag"
	"fmt"
	"go/format"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the templates")

// goldenCases are the projects whose every generated file is kept in testdata/<case>/.
var goldenCases = map[string]newOptions{
	"plain": {module: "github.com/acme/hello", goVersion: minGoVersion, chassisVersion: "v1.2.3"},
	"deps":  {module: "github.com/acme/orders", goVersion: "1.27", chassisVersion: "v1.2.3", deps: []string{"pricing", "product-catalog"}},
	"grpc":  {module: "github.com/acme/pricing", goVersion: minGoVersion, chassisVersion: "v1.2.3", grpc: true},
}

func TestGolden(t *testing.T) {
	for name, o := range goldenCases {
		t.Run(name, func(t *testing.T) {
			p, out := mustRender(t, o)
			for _, f := range generated(p) {
				if !strings.HasSuffix(f.tmpl, ".tmpl") {
					// Copied as it is: TestGreeterpb checks the source, TestCopiedFiles the copy.
					continue
				}
				golden := filepath.Join("testdata", name, filepath.FromSlash(f.out)+".golden")
				if *update {
					if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(golden, out[f.out], 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update to create it)", err)
				}
				if !bytes.Equal(out[f.out], want) {
					t.Errorf("%s differs from %s (go test -update rewrites it after a deliberate change):\n%s",
						f.out, golden, firstDiff(out[f.out], want))
				}
			}
		})
	}
}

// mustRender validates o and renders the repository.
func mustRender(t *testing.T, o newOptions) (project, map[string][]byte) {
	t.Helper()
	p, err := o.project()
	if err != nil {
		t.Fatal(err)
	}
	out, err := render(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, out
}

// firstDiff shows the first line that differs.
func firstDiff(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < max(len(g), len(w)); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got: %q\nwant: %q", i+1, gl, wl)
		}
	}
	return "(same lines, different bytes)"
}

// The generated Go is gofmt-clean, and every template's output is checked in depth below.
func TestGeneratedGoIsFormatted(t *testing.T) {
	for name, o := range goldenCases {
		p, _ := o.project()
		out, err := render(p)
		if err != nil {
			t.Fatal(err)
		}
		for file, b := range out {
			if !strings.HasSuffix(file, ".go") {
				continue
			}
			if f, err := format.Source(b); err != nil || !bytes.Equal(f, b) {
				t.Errorf("%s/%s is not gofmt-clean: %v", name, file, err)
			}
		}
	}
}

// k8sDoc is the part of a manifest the checks below read. Unknown fields are fine (yaml.v3 is not
// told to be strict about them) but a syntax error or a wrong type is not.
type k8sDoc struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
				Containers                    []struct {
					Name  string `yaml:"name"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					Env []struct {
						Name  string `yaml:"name"`
						Value string `yaml:"value"`
					} `yaml:"env"`
					StartupProbe   *probe `yaml:"startupProbe"`
					LivenessProbe  *probe `yaml:"livenessProbe"`
					ReadinessProbe *probe `yaml:"readinessProbe"`
					Lifecycle      any    `yaml:"lifecycle"`
					Resources      struct {
						Requests map[string]string `yaml:"requests"`
						Limits   map[string]string `yaml:"limits"`
					} `yaml:"resources"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
		Ports []struct {
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

func TestKubernetesManifests(t *testing.T) {
	for name, o := range goldenCases {
		t.Run(name, func(t *testing.T) {
			p, _ := o.project()
			out, err := render(p)
			if err != nil {
				t.Fatal(err)
			}
			dec := yaml.NewDecoder(bytes.NewReader(out["deploy/kubernetes.yaml"]))
			docs := map[string]k8sDoc{}
			for {
				var d k8sDoc
				if err := dec.Decode(&d); err == io.EOF {
					break
				} else if err != nil {
					t.Fatalf("deploy/kubernetes.yaml does not parse: %v", err)
				}
				docs[d.Kind] = d
			}
			dep, svc := docs["Deployment"], docs["Service"]
			if len(docs) != 2 || dep.APIVersion != "apps/v1" || svc.APIVersion != "v1" {
				t.Fatalf("want a Deployment and a Service, got %v", docs)
			}
			if dep.Metadata.Name != p.Name || svc.Metadata.Name != p.Name {
				t.Errorf("names %q %q", dep.Metadata.Name, svc.Metadata.Name)
			}
			tmpl := dep.Spec.Template
			for k, v := range dep.Spec.Selector.MatchLabels {
				if tmpl.Metadata.Labels[k] != v {
					t.Errorf("selector %s=%s does not match the pod labels %v", k, v, tmpl.Metadata.Labels)
				}
			}
			if len(tmpl.Spec.Containers) != 1 {
				t.Fatalf("%d containers", len(tmpl.Spec.Containers))
			}
			c := tmpl.Spec.Containers[0]
			ports := map[string]int{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
			if env["PORT"] != fmt.Sprint(ports["http"]) || env["ADMIN_PORT"] != fmt.Sprint(ports["admin"]) {
				t.Errorf("PORT/ADMIN_PORT %q/%q do not match the container ports %v", env["PORT"], env["ADMIN_PORT"], ports)
			}
			for kind, pr := range map[string]*probe{"/startupz": c.StartupProbe, "/livez": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
				if pr == nil || pr.HTTPGet.Path != kind || pr.HTTPGet.Port != "admin" {
					t.Errorf("probe %s: %+v, want it on the admin port", kind, pr)
				}
			}
			drain, err1 := time.ParseDuration(env["DRAIN_DELAY"])
			shutdown, err2 := time.ParseDuration(env["SHUTDOWN_TIMEOUT"])
			grace := time.Duration(tmpl.Spec.TerminationGracePeriodSeconds) * time.Second
			if err1 != nil || err2 != nil || grace <= drain+shutdown {
				t.Errorf("terminationGracePeriodSeconds %v must exceed DRAIN_DELAY %v + SHUTDOWN_TIMEOUT %v", grace, drain, shutdown)
			}
			// Readiness must notice the drain well within DRAIN_DELAY.
			if rp := c.ReadinessProbe; rp != nil && time.Duration(rp.PeriodSeconds*rp.FailureThreshold)*time.Second >= drain {
				t.Errorf("readiness takes %ds x %d to see the drain, longer than DRAIN_DELAY %v", rp.PeriodSeconds, rp.FailureThreshold, drain)
			}
			if c.Lifecycle != nil {
				t.Error("a preStop hook is not needed: chassis drains by itself")
			}
			for _, r := range []string{"cpu", "memory"} {
				if c.Resources.Requests[r] == "" || c.Resources.Limits[r] == "" {
					t.Errorf("resources: %s request or limit missing", r)
				}
			}
			for _, d := range p.Deps {
				if env["DISCOVERY_STATIC_"+d.Env] == "" {
					t.Errorf("no DISCOVERY_STATIC_%s for dependency %s", d.Env, d.Name)
				}
			}
			wantPorts := []string{"http"}
			if p.GRPC {
				wantPorts = append(wantPorts, "grpc")
				if env["GRPC_PORT"] != fmt.Sprint(ports["grpc"]) || ports["grpc"] == 0 {
					t.Errorf("GRPC_PORT %q does not match the container ports %v", env["GRPC_PORT"], ports)
				}
			}
			var targets []string
			for _, sp := range svc.Spec.Ports {
				targets = append(targets, sp.TargetPort)
			}
			if fmt.Sprint(targets) != fmt.Sprint(wantPorts) {
				t.Errorf("Service target ports %v, want %v", targets, wantPorts)
			}
		})
	}
}

// workflow is the part of the CI workflow the checks read.
type workflow struct {
	Env  map[string]string `yaml:"env"`
	Jobs map[string]struct {
		Steps []struct {
			Uses string         `yaml:"uses"`
			Run  string         `yaml:"run"`
			With map[string]any `yaml:"with"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// runs returns the shell commands of a job, in order.
func (w workflow) runs(job string) []string {
	var out []string
	for _, s := range w.Jobs[job].Steps {
		if s.Run != "" {
			out = append(out, s.Run)
		}
	}
	return out
}

// The workflow parses, tests with the Makefile's targets on go.mod's dependencies only (GOWORK=off)
// and builds the image with `make docker`, so CI's tag is the Makefile's.
func TestWorkflowParses(t *testing.T) {
	for name, o := range goldenCases {
		p, _ := o.project()
		out, err := render(p)
		if err != nil {
			t.Fatal(err)
		}
		var wf workflow
		if err := yaml.Unmarshal(out[".github/workflows/ci.yml"], &wf); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if wf.Env["GOWORK"] != "off" {
			t.Errorf("%s: the workflow must not use a go.work: env %v", name, wf.Env)
		}
		if got := strings.Join(wf.runs("test"), ";"); got != "make lint;make test" {
			t.Errorf("%s: test job runs %q", name, got)
		}
		if got := wf.runs("image"); len(got) != 1 || !strings.HasPrefix(got[0], "make docker") {
			t.Errorf("%s: image job runs %q, want make docker", name, got)
		}
		if steps := wf.Jobs["image"].Steps; len(steps) == 0 || fmt.Sprint(steps[0].With["fetch-depth"]) != "0" {
			t.Errorf("%s: the image job must check out the tags (fetch-depth: 0) for VERSION", name)
		}
	}
}

// FuzzProject checks that whatever module path, dependencies and -grpc the validation accepts
// produce a repository whose Go files are valid, formatted Go.
func FuzzProject(f *testing.F) {
	f.Add("github.com/acme/orders", "pricing,catalog", "", false)
	f.Add("example.com/a/b/v3", "", "svc", true)
	f.Add("x.io/y", "a-b,c-d-e", "", true)
	f.Fuzz(func(t *testing.T, mod, deps, name string, grpc bool) {
		o := newOptions{module: mod, name: name, goVersion: minGoVersion, chassisVersion: "v1.0.0", grpc: grpc}
		if deps != "" {
			o.deps = strings.Split(deps, ",")
		}
		p, err := o.project()
		if err != nil {
			return
		}
		out, err := render(p)
		if err != nil {
			t.Fatalf("accepted %q %q %q but rendering failed: %v", mod, deps, name, err)
		}
		if !dnsLabel.MatchString(p.Name) {
			t.Fatalf("accepted service name %q", p.Name)
		}
		dec := yaml.NewDecoder(bytes.NewReader(out["deploy/kubernetes.yaml"]))
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("name %q: kubernetes.yaml does not parse: %v", p.Name, err)
			}
		}
	})
}
