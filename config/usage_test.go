package config_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cloudchassis/kit/config"
)

func TestWriteUsageWidthGroupsAndWraps(t *testing.T) {
	vars := []config.Var{
		{Name: "A", Type: "string", Description: "first", Group: "One"},
		{Name: "LONG_NAME", Type: "integer", Default: "8", HasDefault: true, Required: true, Group: "One",
			Description: strings.Repeat("word ", 30)},
		{Name: "TOKEN", Type: "string", Secret: true, Group: "Two", Description: "a list a,b,c," + strings.Repeat("x,", 40)},
	}
	var b bytes.Buffer
	if err := config.WriteUsageWidth(&b, vars, 50); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"One:\n  A          first (string)\n", "\nTwo:\n", "(integer, default 8,\n             required)", "(string, secret; or\n         TOKEN_FILE)"} {
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if len(line) > 50 {
			t.Errorf("line of %d columns: %q", len(line), line)
		}
	}
}

func TestLowerTag(t *testing.T) {
	var s struct {
		Level string `envconfig:"LEVEL" lower:"true" validate:"oneof=debug info"`
	}
	if err := config.Load(&s, config.WithLookup(config.MapLookup(map[string]string{"LEVEL": "DEBUG"}))); err != nil || s.Level != "debug" {
		t.Fatalf("LEVEL=DEBUG: %q, %v", s.Level, err)
	}
	err := config.Load(&s, config.WithLookup(config.MapLookup(map[string]string{"LEVEL": "Loud"})))
	if err == nil || !strings.Contains(err.Error(), `LEVEL="Loud"`) {
		t.Fatalf("LEVEL=Loud: %v", err)
	}
}
