package semconv_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestEveryDocumentedEventIsProvoked holds docs/telemetry.md to the code: every span event in its
// "Span events" table, and every rejection and ejection reason its metrics table lists, must have a
// test somewhere in the repository that provokes it and looks for it on a span. Mechanically: some
// Test function (with the same-file helpers it calls) must refer to the event (the semconv constant
// or its value), and for a reason to both the reason and the event that carries it
// (chassis.rejected, chassis.ejection). The behavioural tests themselves fail when the event is
// not emitted; this test fails when a documented event has no such test. Every Event* constant
// must also be in the table.
func TestEveryDocumentedEventIsProvoked(t *testing.T) {
	doc, err := os.ReadFile("../../docs/telemetry.md")
	if err != nil {
		t.Fatal(err)
	}
	consts := semconvConsts(t)
	byValue := map[string]string{} // value -> constant name, for Event* and Reason*
	for name, v := range consts {
		if strings.HasPrefix(name, "Event") || strings.HasPrefix(name, "Reason") {
			byValue[v] = name
		}
	}

	// The span events table: rows "| `chassis.x` | attributes |" after the "### Span events" heading.
	section := string(doc)
	if i := strings.Index(section, "### Span events"); i >= 0 {
		section = section[i:]
	} else {
		t.Fatal(`docs/telemetry.md has no "### Span events" section`)
	}
	if i := strings.Index(section[1:], "\n#"); i >= 0 {
		section = section[:i+1]
	}
	var events []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z._]+)` \\|").FindAllStringSubmatch(section, -1) {
		events = append(events, m[1])
	}
	if len(events) < 5 {
		t.Fatalf("found %d events in the span events table: %q", len(events), events)
	}
	for name, v := range consts {
		if strings.HasPrefix(name, "Event") && !slices.Contains(events, v) {
			t.Errorf("semconv.%s (%q) is not in the span events table of docs/telemetry.md", name, v)
		}
	}

	// The reasons each carrying event may have, from the metrics table.
	reasons := func(attr string) []string {
		m := regexp.MustCompile("`" + regexp.QuoteMeta(attr) + "` \\(([^)]*)\\)").FindStringSubmatch(string(doc))
		if m == nil {
			t.Fatalf("docs/telemetry.md lists no values for %s", attr)
		}
		var out []string
		for _, v := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(m[1], -1) {
			out = append(out, v[1])
		}
		return out
	}

	tests := testFuncRefs(t, "../..")
	provoked := func(needles ...string) bool {
		for _, refs := range tests {
			all := true
			for _, n := range needles {
				c := byValue[n]
				all = all && (refs["semconv."+c] || refs[strconv.Quote(n)])
			}
			if all {
				return true
			}
		}
		return false
	}
	for _, e := range events {
		if byValue[e] == "" {
			t.Errorf("event %q: no semconv constant has this value", e)
		}
		if !provoked(e) {
			t.Errorf("event %q is documented, but no test provokes it and looks for it on a span", e)
		}
	}
	for event, attr := range map[string]string{"chassis.rejected": "chassis.rejection.reason", "chassis.ejection": "chassis.ejection.reason"} {
		for _, r := range reasons(attr) {
			if byValue[r] == "" {
				t.Errorf("%s %q: no semconv constant has this value", attr, r)
			}
			if !provoked(event, r) {
				t.Errorf("%s %q is documented, but no test provokes a %s event with it", attr, r, event)
			}
		}
	}
}

// semconvConsts returns the string constants of semconv.go by name.
func semconvConsts(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "semconv.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if i < len(vs.Values) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						out[n.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
		}
	}
	return out
}

// testFuncRefs returns, for every Test function in the _test.go files under root (outside this
// package), what it refers to: "semconv.X" selectors and string literals (quoted), in its body and
// in the bodies of the same file's functions it calls.
func testFuncRefs(t *testing.T, root string) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n != ".." && (strings.HasPrefix(n, ".") || n == "testdata" || n == "node_modules" || n == "vendor") && path != root {
				return filepath.SkipDir
			}
			if filepath.ToSlash(path) == filepath.ToSlash(filepath.Join(root, "telemetry/semconv")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		funcs := map[string]*ast.FuncDecl{}
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil && fd.Recv == nil {
				funcs[fd.Name.Name] = fd
			}
		}
		for name, fd := range funcs {
			if !strings.HasPrefix(name, "Test") {
				continue
			}
			refs := map[string]bool{}
			var collect func(n ast.Node, follow bool)
			collect = func(n ast.Node, follow bool) {
				ast.Inspect(n, func(n ast.Node) bool {
					switch x := n.(type) {
					case *ast.SelectorExpr:
						if id, ok := x.X.(*ast.Ident); ok && id.Name == "semconv" {
							refs["semconv."+x.Sel.Name] = true
						}
					case *ast.BasicLit:
						if x.Kind == token.STRING {
							if v, err := strconv.Unquote(x.Value); err == nil {
								refs[strconv.Quote(v)] = true
							}
						}
					case *ast.CallExpr:
						if id, ok := x.Fun.(*ast.Ident); ok && follow {
							if helper := funcs[id.Name]; helper != nil && helper != fd {
								collect(helper.Body, false)
							}
						}
					}
					return true
				})
			}
			collect(fd.Body, true)
			out[path+":"+name] = refs
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
