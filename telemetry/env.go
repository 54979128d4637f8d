package telemetry

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

// EnvError reports one bad OTEL_* (or logging) setting. New joins every problem it finds with
// errors.Join, so a user sees them all at once; match one with errors.As.
type EnvError struct {
	Key, Value string
	Reason     string // what is allowed, e.g. "one of otlp, none"
}

func (e *EnvError) Error() string {
	return fmt.Sprintf("%s=%q: %s", e.Key, e.Value, e.Reason)
}

// Signal exporters selected by OTEL_*_EXPORTER.
const (
	exporterOTLP       = "otlp"
	exporterNone       = "none"
	exporterPrometheus = "prometheus"
	exporterConsole    = "console"
)

// OTLP protocols (OTEL_EXPORTER_OTLP_PROTOCOL).
const (
	protocolHTTP = "http/protobuf"
	protocolGRPC = "grpc"
)

// Default OTLP endpoints per protocol, from the OpenTelemetry specification.
const (
	defaultHTTPEndpoint = "http://localhost:4318"
	defaultGRPCEndpoint = "http://localhost:4317"
)

// otlpConfig is the resolved OTLP setting of one signal.
type otlpConfig struct {
	protocol    string
	endpoint    string // full URL: for http/protobuf it includes the signal path
	insecure    bool
	headers     map[string]string
	compression string // "gzip" or "none"
	timeout     time.Duration
	certificate string // CA file
	clientCert  string
	clientKey   string
}

// envConfig is everything New reads from OTEL_* variables, resolved with defaults.
type envConfig struct {
	disabled bool

	traces, metrics, logs             []string // exporter names
	tracesOTLP, metricsOTLP, logsOTLP otlpConfig

	sampler    string
	samplerArg float64

	serviceName string               // OTEL_SERVICE_NAME
	resource    []attribute.KeyValue // OTEL_RESOURCE_ATTRIBUTES

	temporality    string // cumulative | delta | lowmemory
	exemplarFilter string // trace_based | always_on | always_off

	metricInterval, metricTimeout time.Duration

	bspDelay, bspTimeout       time.Duration
	bspQueue, bspBatch         int
	blrpDelay, blrpTimeout     time.Duration
	blrpQueue, blrpBatch       int
	attrCount, attrValueLength int // generic limits; 0 value length = unlimited

	spanAttrCount, spanValueLength, eventCount, linkCount, eventAttrCount, linkAttrCount int
	logAttrCount, logValueLength                                                         int
}

type envReader struct {
	lookup func(string) (string, bool)
	errs   []error
}

func (r *envReader) get(key string) (string, bool) {
	v, ok := r.lookup(key)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

// bad records a problem once: a generic OTEL_EXPORTER_OTLP_* variable is read for each signal.
func (r *envReader) bad(key, value, reason string) {
	for _, e := range r.errs {
		if ee := e.(*EnvError); ee.Key == key && ee.Value == value {
			return
		}
	}
	r.errs = append(r.errs, &EnvError{Key: key, Value: value, Reason: reason})
}

func (r *envReader) boolean(key string) bool {
	v, ok := r.get(key)
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.bad(key, v, "not a boolean (true or false)")
		return false
	}
	return b
}

func (r *envReader) integer(key string, def int) int {
	v, ok := r.get(key)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		r.bad(key, v, "not a non-negative integer")
		return def
	}
	return n
}

// millis reads a duration in milliseconds, the unit every OTEL_* duration uses.
func (r *envReader) millis(key string, def time.Duration) time.Duration {
	v, ok := r.get(key)
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		r.bad(key, v, "not a non-negative number of milliseconds")
		return def
	}
	return time.Duration(n) * time.Millisecond
}

func (r *envReader) oneOf(key, def string, allowed ...string) string {
	v, ok := r.get(key)
	if !ok {
		return def
	}
	v = strings.ToLower(v)
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	r.bad(key, v, "one of "+strings.Join(allowed, ", "))
	return def
}

// exporters reads a comma-separated exporter list. def applies when the variable is unset.
func (r *envReader) exporters(key string, def []string, allowed ...string) []string {
	v, ok := r.get(key)
	if !ok {
		return def
	}
	var out []string
	for _, part := range strings.Split(strings.ToLower(v), ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		found := false
		for _, a := range allowed {
			if part == a {
				found = true
			}
		}
		if !found {
			r.bad(key, v, "a comma-separated list of "+strings.Join(allowed, ", "))
			return def
		}
		if part != exporterNone && !contains(out, part) {
			out = append(out, part)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// CheckEnv reports every bad OTEL_* variable that New would refuse, without building anything: the
// errors are *EnvError values joined with errors.Join (nil when all are valid). lookup is
// os.LookupEnv when nil. chassis.New uses it to list OTEL_* problems with every other configuration
// problem at once.
func CheckEnv(lookup func(string) (string, bool)) error {
	_, err := readEnv(lookup)
	return err
}

// readEnv resolves every OTEL_* variable Chassis honours. Variables the SDK or the exporters would
// otherwise read from the process environment are all resolved here and passed to them as options,
// so lookup is the only source.
func readEnv(lookup func(string) (string, bool)) (envConfig, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	r := &envReader{lookup: lookup}
	var c envConfig
	c.disabled = r.boolean("OTEL_SDK_DISABLED")

	// An endpoint is how a deployment says "there is a collector": without one, traces and logs are
	// not exported (rather than failing every few seconds against localhost:4318), and metrics are
	// served by Prometheus alone. An explicit OTEL_*_EXPORTER always wins.
	_, anyEndpoint := r.get("OTEL_EXPORTER_OTLP_ENDPOINT")
	_, traceEndpoint := r.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	_, metricEndpoint := r.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
	var defTraces, defMetrics []string
	defMetrics = []string{exporterPrometheus}
	if anyEndpoint || traceEndpoint {
		defTraces = []string{exporterOTLP}
	}
	if anyEndpoint || metricEndpoint {
		defMetrics = append(defMetrics, exporterOTLP)
	}
	// Logs already go to stdout as JSON; OTLP log export is opt-in (OTEL_LOGS_EXPORTER=otlp) so that
	// a collector that also tails stdout does not receive every line twice.
	c.traces = r.exporters("OTEL_TRACES_EXPORTER", defTraces, exporterOTLP, exporterNone, exporterConsole)
	c.metrics = r.exporters("OTEL_METRICS_EXPORTER", defMetrics, exporterOTLP, exporterPrometheus, exporterNone)
	c.logs = r.exporters("OTEL_LOGS_EXPORTER", nil, exporterOTLP, exporterNone)
	if contains(c.traces, exporterConsole) {
		r.bad("OTEL_TRACES_EXPORTER", exporterConsole, "console is not supported; use otlp or none")
	}

	c.tracesOTLP = r.otlp("TRACES", "/v1/traces")
	c.metricsOTLP = r.otlp("METRICS", "/v1/metrics")
	c.logsOTLP = r.otlp("LOGS", "/v1/logs")

	c.sampler = r.oneOf("OTEL_TRACES_SAMPLER", "parentbased_always_on",
		"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
		"parentbased_traceidratio")
	c.samplerArg = 1
	if v, ok := r.get("OTEL_TRACES_SAMPLER_ARG"); ok && strings.HasSuffix(c.sampler, "traceidratio") {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f >= 0 && f <= 1) { // NaN fails both comparisons
			r.bad("OTEL_TRACES_SAMPLER_ARG", v, "a sampling probability between 0 and 1")
		} else {
			c.samplerArg = f
		}
	}

	c.serviceName, _ = r.get("OTEL_SERVICE_NAME")
	if v, ok := r.get("OTEL_RESOURCE_ATTRIBUTES"); ok {
		attrs, err := parseResourceAttributes(v)
		if err != nil {
			r.bad("OTEL_RESOURCE_ATTRIBUTES", v, err.Error())
		}
		c.resource = attrs
	}

	c.temporality = r.oneOf("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative",
		"cumulative", "delta", "lowmemory")
	c.exemplarFilter = r.oneOf("OTEL_METRICS_EXEMPLAR_FILTER", "trace_based",
		"trace_based", "always_on", "always_off")
	c.metricInterval = r.millis("OTEL_METRIC_EXPORT_INTERVAL", 60*time.Second)
	c.metricTimeout = r.millis("OTEL_METRIC_EXPORT_TIMEOUT", 30*time.Second)

	c.bspDelay = r.millis("OTEL_BSP_SCHEDULE_DELAY", 5*time.Second)
	c.bspTimeout = r.millis("OTEL_BSP_EXPORT_TIMEOUT", 30*time.Second)
	c.bspQueue = r.integer("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
	c.bspBatch = r.integer("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)
	c.blrpDelay = r.millis("OTEL_BLRP_SCHEDULE_DELAY", time.Second)
	c.blrpTimeout = r.millis("OTEL_BLRP_EXPORT_TIMEOUT", 30*time.Second)
	c.blrpQueue = r.integer("OTEL_BLRP_MAX_QUEUE_SIZE", 2048)
	c.blrpBatch = r.integer("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 512)
	c.attrCount = r.integer("OTEL_ATTRIBUTE_COUNT_LIMIT", 128)
	c.attrValueLength = r.integer("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", 0)
	// Signal-specific limits fall back to the generic ones, as the specification says.
	c.spanAttrCount = r.integer("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", c.attrCount)
	c.spanValueLength = r.integer("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", c.attrValueLength)
	c.eventCount = r.integer("OTEL_SPAN_EVENT_COUNT_LIMIT", 128)
	c.linkCount = r.integer("OTEL_SPAN_LINK_COUNT_LIMIT", 128)
	c.eventAttrCount = r.integer("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", 128)
	c.linkAttrCount = r.integer("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", 128)
	c.logAttrCount = r.integer("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", c.attrCount)
	c.logValueLength = r.integer("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", c.attrValueLength)
	return c, errors.Join(r.errs...)
}

// otlp resolves the OTLP settings of one signal: the signal-specific variable wins over the generic
// one, as the specification says.
func (r *envReader) otlp(signal, path string) otlpConfig {
	pick := func(name string) (key, val string, ok bool) {
		key = "OTEL_EXPORTER_OTLP_" + signal + "_" + name
		if v, ok := r.get(key); ok {
			return key, v, true
		}
		key = "OTEL_EXPORTER_OTLP_" + name
		v, ok := r.get(key)
		return key, v, ok
	}
	var c otlpConfig
	c.protocol = protocolHTTP
	if key, v, ok := pick("PROTOCOL"); ok {
		switch strings.ToLower(v) {
		case protocolHTTP, protocolGRPC:
			c.protocol = strings.ToLower(v)
		default:
			r.bad(key, v, "one of http/protobuf, grpc")
		}
	}
	endpointKey, endpointVal := "", ""
	if v, ok := r.get("OTEL_EXPORTER_OTLP_" + signal + "_ENDPOINT"); ok {
		c.endpoint = v // signal-specific endpoints are used as they are
		endpointKey, endpointVal = "OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT", v
	} else if v, ok := r.get("OTEL_EXPORTER_OTLP_ENDPOINT"); ok {
		c.endpoint = v
		if c.protocol == protocolHTTP {
			c.endpoint = strings.TrimRight(v, "/") + path
		}
		endpointKey, endpointVal = "OTEL_EXPORTER_OTLP_ENDPOINT", v
	} else if c.protocol == protocolGRPC {
		c.endpoint = defaultGRPCEndpoint
	} else {
		c.endpoint = defaultHTTPEndpoint + path
	}
	if u, err := url.Parse(c.endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		r.bad(endpointKey, endpointVal, "not an http:// or https:// URL")
	} else if u.Scheme == "http" {
		c.insecure = true
	}
	if key, v, ok := pick("INSECURE"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			r.bad(key, v, "not a boolean (true or false)")
		}
		c.insecure = c.insecure || b
	}
	c.headers = map[string]string{}
	for _, key := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_" + signal + "_HEADERS"} {
		if v, ok := r.get(key); ok {
			h, err := parseHeaders(v)
			if err != nil {
				r.bad(key, v, err.Error())
			}
			for k, hv := range h {
				c.headers[k] = hv
			}
		}
	}
	c.compression = "none"
	if key, v, ok := pick("COMPRESSION"); ok {
		switch strings.ToLower(v) {
		case "gzip", "none":
			c.compression = strings.ToLower(v)
		default:
			r.bad(key, v, "one of gzip, none")
		}
	}
	c.timeout = 10 * time.Second
	if key, _, ok := pick("TIMEOUT"); ok {
		c.timeout = r.millis(key, c.timeout)
	}
	_, c.certificate, _ = pick("CERTIFICATE")
	_, c.clientCert, _ = pick("CLIENT_CERTIFICATE")
	_, c.clientKey, _ = pick("CLIENT_KEY")
	return c
}

// parseHeaders parses the W3C-baggage-like list of OTEL_EXPORTER_OTLP_HEADERS: "k1=v1,k2=v2" with
// percent-encoded values.
func parseHeaders(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.ContainsAny(k, " \t\r\n:") {
			return out, errors.New(`want a comma-separated list of key=value`)
		}
		dv, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return out, fmt.Errorf("value of %q: %w", k, err)
		}
		if strings.ContainsAny(dv, "\r\n") {
			return out, fmt.Errorf("value of %q contains a line break", k)
		}
		out[k] = dv
	}
	return out, nil
}

// parseResourceAttributes parses OTEL_RESOURCE_ATTRIBUTES: "k1=v1,k2=v2", values percent-encoded.
func parseResourceAttributes(s string) ([]attribute.KeyValue, error) {
	var out []attribute.KeyValue
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return out, errors.New("want a comma-separated list of key=value")
		}
		dv, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return out, fmt.Errorf("value of %q: %w", k, err)
		}
		out = append(out, attribute.String(k, dv))
	}
	return out, nil
}
