package telemetry

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func lookup(pairs ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(pairs); i += 2 {
		m[pairs[i]] = pairs[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestReadEnvDefaults(t *testing.T) {
	c, err := readEnv(lookup())
	if err != nil {
		t.Fatal(err)
	}
	if len(c.traces) != 0 || strings.Join(c.metrics, ",") != "prometheus" || len(c.logs) != 0 {
		t.Errorf("exporters without an endpoint: traces %v metrics %v logs %v", c.traces, c.metrics, c.logs)
	}
	if c.tracesOTLP.endpoint != "http://localhost:4318/v1/traces" || !c.tracesOTLP.insecure || c.tracesOTLP.protocol != protocolHTTP {
		t.Errorf("default trace endpoint %+v", c.tracesOTLP)
	}
	if c.sampler != "parentbased_always_on" || c.samplerArg != 1 || c.bspDelay != 5*time.Second {
		t.Errorf("defaults %+v", c)
	}
}

func TestReadEnvEndpointsAndPrecedence(t *testing.T) {
	c, err := readEnv(lookup(
		"OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318/",
		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://metrics:9000/custom",
		"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc",
		"OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2",
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=3",
		"OTEL_EXPORTER_OTLP_TIMEOUT", "2500",
		"OTEL_TRACES_SAMPLER", "parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG", "0.25",
		"OTEL_LOGS_EXPORTER", "otlp",
	))
	if err != nil {
		t.Fatal(err)
	}
	if c.tracesOTLP.endpoint != "https://collector:4318/v1/traces" || c.tracesOTLP.insecure {
		t.Errorf("traces %+v", c.tracesOTLP)
	}
	if c.metricsOTLP.endpoint != "http://metrics:9000/custom" || !c.metricsOTLP.insecure {
		t.Errorf("a signal endpoint is used as is: %+v", c.metricsOTLP)
	}
	if c.logsOTLP.protocol != protocolGRPC || c.logsOTLP.endpoint != "https://collector:4318/" {
		t.Errorf("grpc takes the generic endpoint without a path: %+v", c.logsOTLP)
	}
	if c.tracesOTLP.headers["a"] != "1" || c.tracesOTLP.headers["b"] != "3" || c.metricsOTLP.headers["b"] != "2" {
		t.Errorf("headers %v %v", c.tracesOTLP.headers, c.metricsOTLP.headers)
	}
	if c.tracesOTLP.timeout != 2500*time.Millisecond || c.samplerArg != 0.25 {
		t.Errorf("timeout %v arg %v", c.tracesOTLP.timeout, c.samplerArg)
	}
	if strings.Join(c.traces, ",") != "otlp" || strings.Join(c.metrics, ",") != "prometheus,otlp" || strings.Join(c.logs, ",") != "otlp" {
		t.Errorf("exporters with an endpoint: %v %v %v", c.traces, c.metrics, c.logs)
	}
}

func TestReadEnvErrors(t *testing.T) {
	_, err := readEnv(lookup(
		"OTEL_SDK_DISABLED", "maybe",
		"OTEL_METRICS_EXPORTER", "prometheus,statsd",
		"OTEL_TRACES_SAMPLER_ARG", "2",
		"OTEL_TRACES_SAMPLER", "traceidratio",
		"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318",
		"OTEL_RESOURCE_ATTRIBUTES", "novalue",
	))
	var problems []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ee *EnvError
		if !errors.As(e, &ee) {
			t.Fatalf("%T is not an *EnvError", e)
		}
		problems = append(problems, ee.Key)
	}
	// The shared endpoint is read for three signals but reported once.
	want := "OTEL_SDK_DISABLED OTEL_METRICS_EXPORTER OTEL_EXPORTER_OTLP_ENDPOINT OTEL_TRACES_SAMPLER_ARG OTEL_RESOURCE_ATTRIBUTES"
	if strings.Join(problems, " ") != want {
		t.Errorf("problems %v\nwant %s", problems, want)
	}
}

func TestParseHeaders(t *testing.T) {
	h, err := parseHeaders(" api-key = s3cr%3Dt , x=y,,")
	if err != nil || h["api-key"] != "s3cr=t" || h["x"] != "y" || len(h) != 2 {
		t.Errorf("%v %v", h, err)
	}
	for _, bad := range []string{"novalue", "=v", "a=%zz", "a=b%0Ac"} {
		if _, err := parseHeaders(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseHeaders(f *testing.F) {
	for _, s := range []string{"a=b", "k=v%20w,x=y", "=", ",,", "a=%", "a=b\nc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseHeaders(s)
		if err != nil {
			return
		}
		for k, v := range h {
			if k == "" || strings.ContainsAny(k, " \t\r\n:") || strings.ContainsAny(v, "\r\n") {
				t.Errorf("accepted an unsafe header %q: %q from %q", k, v, s)
			}
		}
	})
}

func FuzzParseResourceAttributes(f *testing.F) {
	for _, s := range []string{"service.name=x", "a=1,b=%20", "x", "=y", "a=b=c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		attrs, err := parseResourceAttributes(s)
		if err != nil {
			return
		}
		for _, kv := range attrs {
			if kv.Key == "" || !kv.Valid() {
				t.Errorf("invalid attribute %v from %q", kv, s)
			}
		}
	})
}

func FuzzReadEnv(f *testing.F) {
	f.Add("OTEL_TRACES_SAMPLER", "traceidratio", "OTEL_TRACES_SAMPLER_ARG", "0.5")
	f.Add("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:1", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		c, err := readEnv(lookup(k1, v1, k2, v2))
		if err == nil && (c.samplerArg < 0 || c.samplerArg > 1) {
			t.Errorf("sampler arg %v accepted", c.samplerArg)
		}
	})
}

func TestRouteOf(t *testing.T) {
	for in, want := range map[string]string{
		"GET /items/{id}":         "/items/{id}",
		"example.com/x":           "/x",
		"POST example.com/a/{b}/": "/a/{b}/",
		"/":                       "/",
		"":                        "",
	} {
		if got := routeOf(in); got != want {
			t.Errorf("routeOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAttrCacheBound(t *testing.T) {
	c := newAttrCache[int, int](2)
	build := func(k int) int { return k * 10 }
	for k, wantCached := range []bool{true, true, false, false} {
		v, cached := c.get(k, build)
		if v != k*10 || cached != wantCached {
			t.Errorf("get(%d) = %d, %v; want %d, %v", k, v, cached, k*10, wantCached)
		}
	}
	if v, cached := c.get(1, build); v != 10 || !cached {
		t.Errorf("a cached key was lost")
	}
}

func TestSplitHostPort(t *testing.T) {
	for in, want := range map[string]struct {
		host string
		port int
	}{
		"example.com":      {"example.com", 0},
		"example.com:8080": {"example.com", 8080},
		"127.0.0.1:50000":  {"127.0.0.1", 50000},
		"[::1]:443":        {"::1", 443},
		"[::1]":            {"::1", 0},
		"::1":              {"::1", 0},
		"host:":            {"host", 0},
		"":                 {"", 0},
	} {
		host, port := splitHostPort(in)
		if host != want.host || port != want.port {
			t.Errorf("splitHostPort(%q) = %q, %d; want %q, %d", in, host, port, want.host, want.port)
		}
	}
}

func FuzzSplitHostPort(f *testing.F) {
	for _, s := range []string{"a:1", "[::1]:2", "[", "]:", "::", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, port := splitHostPort(s)
		if port < 0 || len(host) > len(s) {
			t.Errorf("splitHostPort(%q) = %q, %d", s, host, port)
		}
	})
}

// TestSamplerArgRefusesNaN: NaN compares false with everything, so a range check written as
// "f < 0 || f > 1" let it through as the sampling probability.
func TestSamplerArgRefusesNaN(t *testing.T) {
	for _, v := range []string{"NaN", "nan", "-NaN", "Inf", "-1", "1.5"} {
		err := CheckEnv(lookup("OTEL_TRACES_SAMPLER", "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG", v))
		var ee *EnvError
		if !errors.As(err, &ee) || ee.Key != "OTEL_TRACES_SAMPLER_ARG" {
			t.Errorf("OTEL_TRACES_SAMPLER_ARG=%s: got %v", v, err)
		}
	}
	if err := CheckEnv(lookup("OTEL_TRACES_SAMPLER", "traceidratio", "OTEL_TRACES_SAMPLER_ARG", "0.1")); err != nil {
		t.Fatal(err)
	}
}
