package discoverytest

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cloudchassis/kit/discovery/consul"
)

func TestParseFilter(t *testing.T) {
	f := fields{id: "a", service: "web", address: "10.0.0.1", node: FakeNode, port: 80, tags: []string{"v1", "blue"},
		meta: map[string]string{"zone": "eu-1", "odd key": "x"}}
	for expr, want := range map[string]bool{
		"Service.Meta.zone == `eu-1`":                          true,
		`Service.Meta["zone"] == "eu-2"`:                       false,
		"Service.Meta[`odd key`] == `x`":                       true,
		`"v1" in Service.Tags and "blue" in Service.Tags`:      true,
		`"v2" not in Service.Tags`:                             true,
		`(Service.ID == "a") and (Service.Port == "80")`:       true,
		`Service.Tags is not empty and Service.Address != "x"`: true,
		`Node.Node == "nope"`:                                  false,
		`"zone" in Service.Meta`:                               true,
	} {
		e, err := parseFilter(expr)
		if err != nil {
			t.Errorf("%s: %v", expr, err)
			continue
		}
		if got := e.match(f); got != want {
			t.Errorf("%s = %v, want %v", expr, got, want)
		}
	}
	for _, bad := range []string{"a or b", `Service.Port > "1"`, "(Service.ID == `a`", `Service.Meta.zone == "x`, "Foo.Bar == `x`", "Service.ID == `a` and"} {
		if _, err := parseFilter(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"Service.Meta.zone == `eu-1`", `"v1" in Service.Tags and (Service.ID == "a")`, `Service.Meta["k"] is empty`, "((", "Service.Meta[`"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := parseFilter(s)
		if err != nil {
			return
		}
		_ = e.match(fields{meta: map[string]string{}}) // must not panic on any accepted expression
	})
}

// FuzzMetaFilter checks that what consul.MetaFilter writes is understood by the fake (and so by the
// filter grammar both implement) for any key and value it can represent.
func FuzzMetaFilter(f *testing.F) {
	f.Add("zone", "eu-1")
	f.Add("odd key", "with `tick`")
	f.Add("a.b", `quote " here`)
	f.Fuzz(func(t *testing.T, key, value string) {
		if key == "" || !utf8.ValidString(key) || !utf8.ValidString(value) || strings.Contains(key, "`") && (strings.Contains(key, `"`) || strings.Contains(key, `\`)) ||
			strings.ContainsRune(key, '\r') ||
			strings.Contains(value, "`") && (strings.Contains(value, `"`) || strings.Contains(value, `\`)) ||
			strings.ContainsRune(value, '\r') {
			t.Skip("not representable")
		}
		expr := consul.MetaFilter(key, value)
		e, err := parseFilter(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if !e.match(fields{meta: map[string]string{key: value}}) {
			t.Fatalf("%s does not match %q=%q", expr, key, value)
		}
		if e.match(fields{meta: map[string]string{key: value + "x"}}) {
			t.Fatalf("%s matches a different value", expr)
		}
	})
}
