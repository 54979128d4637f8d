package chassis_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/internal/syncbuf"
)

// mapEnv is env's map with WithEnviron listing it, so that New scans CLIENT_* and DISCOVERY_STATIC_*.
func mapEnv(kv ...string) []chassis.Option {
	m := map[string]string{"PORT": "0", "ADMIN_PORT": "0", "HOST": "127.0.0.1", "DRAIN_DELAY": "0s",
		"SHUTDOWN_TIMEOUT": "5s", "LOG_LEVEL": "warn"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return []chassis.Option{chassis.WithEnv(config.MapLookup(m)), chassis.WithEnviron(func() []string {
		var out []string
		for k, v := range m {
			out = append(out, k+"="+v)
		}
		return out
	})}
}

func problemVars(t *testing.T, err error) []string {
	t.Helper()
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want a *config.Error, got %v", err)
	}
	var out []string
	for _, p := range ce.Problems {
		out = append(out, p.Var)
	}
	return out
}

// TestConsulSettingsWithTheOthers: with consul discovery, CONSUL_* problems come with the rest.
func TestConsulSettingsWithTheOthers(t *testing.T) {
	_, err := chassis.New("svc", mapEnv("DISCOVERY", "consul", "CONSUL_HTTP_ADDR", "ftp://consul:8500", "PORT", "abc",
		"OTEL_METRICS_EXPORTER", "statsd")...)
	got := strings.Join(problemVars(t, err), " ")
	if !strings.Contains(err.Error(), "CONSUL_HTTP_ADDR") || !strings.Contains(got, "PORT") || !strings.Contains(got, "OTEL_METRICS_EXPORTER") {
		t.Fatalf("want PORT, OTEL_METRICS_EXPORTER and CONSUL_HTTP_ADDR together: %v", err)
	}
}

// TestDependencyProblemsAloneWaitForRun: New cannot know the dependencies, so problems of
// CLIENT_<NAME>_* alone do not fail it; Run fails before anything starts, listing the declared
// dependencies' problems once, and releases what New built (goleak checks it).
func TestDependencyProblemsAloneWaitForRun(t *testing.T) {
	var logs syncbuf.Buffer
	opts := append(mapEnv("CLIENT_PRICING_RETRIES", "-1", "DISCOVERY_STATIC_PRICING", "127.0.0.1:1",
		"CLIENT_PRICING_TIMEOTU", "1s", // misspelt, and CLIENT_PRICING_TIMEOUT is unset: a problem
		"CLIENT_PRICING_HEDGE_DELAY", "1ms", "CLIENT_PRICING_HEDGE_DELY", "5ms", // the real one is set: a warning
		"DISCOVERY_STATIC_INVENTORY", "127.0.0.1:2,127.0.0.1:3",
		"CLIENT_ID", "oauth-client", // read by the service itself (WithConfig)
	), chassis.WithLogOutput(&logs), chassis.WithConfig(&struct {
		ClientID string `envconfig:"CLIENT_ID"`
	}{}))
	svc, err := chassis.New("gateway", opts...)
	if err != nil {
		t.Fatal(err)
	}
	svc.Client("pricing")
	svc.Client("inventory")
	err = svc.Run(context.Background())
	if got := strings.Join(problemVars(t, err), " "); got != "CLIENT_PRICING_RETRIES CLIENT_PRICING_TIMEOTU" {
		t.Fatalf("problems %q\n%v", got, err)
	}
	if !strings.Contains(err.Error(), `CLIENT_PRICING_RETRIES="-1": must be 0 or more`) ||
		!strings.Contains(err.Error(), "did you mean CLIENT_PRICING_TIMEOUT?") {
		t.Fatalf("messages: %v", err)
	}
	if svc.Addr() != "" || svc.AdminAddr() != "" {
		t.Fatal("a server started")
	}
	out := logs.String()
	if !strings.Contains(out, "environment variables not read") || !strings.Contains(out, "CLIENT_PRICING_HEDGE_DELY") ||
		strings.Contains(out, "CLIENT_ID") || strings.Contains(out, `"level":"error"`) {
		t.Fatalf("logs:\n%s", out)
	}
}

// TestMissingStaticListStopsTheStart: a dependency declared before Run with no instances to call is
// a configuration problem, as is DISCOVERY=none.
func TestMissingStaticListStopsTheStart(t *testing.T) {
	for _, c := range []struct {
		env  []string
		want string
	}{
		{nil, "DISCOVERY_STATIC_PRICING"},
		{[]string{"DISCOVERY", "none"}, "DISCOVERY"},
	} {
		svc, err := chassis.New("gateway", mapEnv(c.env...)...)
		if err != nil {
			t.Fatal(err)
		}
		svc.Client("pricing")
		err = svc.Run(context.Background())
		if got := strings.Join(problemVars(t, err), " "); got != c.want {
			t.Errorf("%v: problems %q, want %s: %v", c.env, got, c.want, err)
		}
	}
}
