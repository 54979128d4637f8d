package dynconfig_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/coordination/coordinationtest"
	"github.com/cloudchassis/kit/coordination/dynconfig"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type Breaker struct {
	Failures int     `default:"5" validate:"min=1" desc:"consecutive failures that open the breaker"`
	Ratio    float64 `default:"0.5" validate:"gt=0,lte=1"`
}

type Settings struct {
	Port      int               `envconfig:"PORT" default:"8080" validate:"min=0,max=65535"`
	LogLevel  string            `envconfig:"LOG_LEVEL" default:"info" validate:"oneof=debug info warn error" reload:"true"`
	RateLimit float64           `envconfig:"RATE_LIMIT" default:"100" validate:"gt=0" reload:"true"`
	Burst     int               `envconfig:"RATE_BURST" default:"10" reload:"true"`
	Breaker   Breaker           `reload:"true"`
	Features  map[string]bool   `envconfig:"FEATURES" reload:"true"`
	APIKey    config.Secret     `envconfig:"API_KEY" reload:"true"`
	Labels    map[string]string `envconfig:"LABELS"`
}

// Validate relates fields, as a service's config would; dynconfig runs it on every change.
func (s *Settings) Validate() error {
	if float64(s.Burst) < s.RateLimit/100 {
		return config.Invalid("RATE_BURST", "", "must be at least RATE_LIMIT/100")
	}
	return nil
}

const prefix = "config/catalog"

var env = config.MapLookup(map[string]string{"PORT": "9000", "LOG_LEVEL": "warn"})

func start(t *testing.T, kv dynconfig.KV, opts ...dynconfig.Option) *dynconfig.Config[Settings] {
	t.Helper()
	c, err := dynconfig.New[Settings](kv, prefix, append([]dynconfig.Option{dynconfig.WithLookup(env)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return c
}

func source(t *testing.T, s *dynconfig.Snapshot[Settings], name string) dynconfig.Setting {
	t.Helper()
	for _, st := range s.Settings {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no setting %s in %+v", name, s.Settings)
	return dynconfig.Setting{}
}

type recorder struct {
	mu      sync.Mutex
	changes [][]string
}

func (r *recorder) record(ch dynconfig.Change[Settings]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, ch.Changed)
}

func (r *recorder) all() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.changes)
}

func TestEnvironmentOnlyBeforeStart(t *testing.T) {
	fc := coordinationtest.New()
	fc.Put(prefix+"/LOG_LEVEL", "debug")
	c, err := dynconfig.New[Settings](fc, prefix, dynconfig.WithLookup(env))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Snapshot()
	if s.Value.LogLevel != "warn" || s.Value.Port != 9000 || s.Value.RateLimit != 100 || s.Index != 0 {
		t.Fatalf("env-only value = %+v index %d", s.Value, s.Index)
	}
	if st := source(t, s, "LOG_LEVEL"); st.Source != dynconfig.SourceEnv || !st.Reloadable {
		t.Fatalf("LOG_LEVEL = %+v", st)
	}
	if st := source(t, s, "PORT"); st.Reloadable {
		t.Fatalf("PORT reloadable: %+v", st)
	}
	if st := source(t, s, "BREAKER_FAILURES"); st.Source != dynconfig.SourceDefault || !st.Reloadable {
		t.Fatalf("BREAKER_FAILURES (reloadable through its struct) = %+v", st)
	}
}

func TestInvalidEnvironmentFailsNew(t *testing.T) {
	_, err := dynconfig.New[Settings](coordinationtest.New(), prefix,
		dynconfig.WithLookup(config.MapLookup(map[string]string{"PORT": "x", "RATE_LIMIT": "-1"})))
	var ce *config.Error
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("New = %v, want a config.Error with 2 problems", err)
	}
}

func TestChangesApplyRejectAndRecover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		fc.Put(prefix+"/RATE_LIMIT", "200")
		reader := metric.NewManualReader()
		c := start(t, fc, dynconfig.WithMeterProvider(metric.NewMeterProvider(metric.WithReader(reader))))
		if got := c.Load().RateLimit; got != 200 {
			t.Fatalf("after Start RateLimit = %v, want 200 from KV", got)
		}
		if st := source(t, c.Snapshot(), "RATE_LIMIT"); st.Source != dynconfig.SourceKV || st.Key != prefix+"/RATE_LIMIT" {
			t.Fatalf("RATE_LIMIT setting = %+v", st)
		}
		var rec recorder
		defer c.Subscribe(rec.record)()

		// A valid change of two values takes effect without restart, in one swap.
		fc.Put(prefix+"/rate_limit", "500") // any letter case; replaces RATE_LIMIT below
		fc.Delete(prefix + "/RATE_LIMIT")
		fc.Put(prefix+"/BREAKER_FAILURES", "3")
		time.Sleep(time.Second)
		synctest.Wait()
		if v := c.Load(); v.RateLimit != 500 || v.Breaker.Failures != 3 {
			t.Fatalf("after valid change: %+v", v)
		}
		if changes := rec.all(); len(changes) == 0 || !slices.Contains(slices.Concat(changes...), "RATE_LIMIT") || !slices.Contains(slices.Concat(changes...), "BREAKER_FAILURES") {
			t.Fatalf("changes seen = %v", changes)
		}
		good := c.Snapshot()

		// One invalid value makes the whole change invalid: neither value applies.
		before := len(rec.all())
		fc.Put(prefix+"/LOG_LEVEL", "verbose")
		fc.Put(prefix+"/RATE_BURST", "abc")
		time.Sleep(time.Second)
		synctest.Wait()
		if c.Snapshot() != good {
			t.Fatalf("snapshot replaced by an invalid change: %+v", c.Load())
		}
		var rej *dynconfig.RejectedError
		var ce *config.Error
		if err := c.Err(); !errors.As(err, &rej) || !errors.As(err, &ce) || len(ce.Problems) != 2 || rej.Kept != good.Index {
			t.Fatalf("Err() = %v, want a RejectedError listing 2 problems", err)
		}
		if !strings.Contains(c.Err().Error(), `LOG_LEVEL="verbose": must be one of: debug, info, warn, error`) {
			t.Fatalf("error text: %v", c.Err())
		}
		if len(rec.all()) != before {
			t.Fatal("subscribers told about a rejected change")
		}
		// Two writes: one evaluation, or two when the watch ran between them.
		if n := counter(t, reader, semconv.MetricConfigReloads, semconv.OutcomeRejected); n < 1 || n > 2 {
			t.Fatalf("rejected reloads = %d", n)
		}
		if g := gauge(t, reader, semconv.MetricConfigInvalid); g != 1 {
			t.Fatalf("%s = %d, want 1", semconv.MetricConfigInvalid, g)
		}
		rep := report(t, c)
		if rep.Rejected == nil || !strings.Contains(rep.Rejected.Error, "RATE_BURST") || rep.Index != good.Index {
			t.Fatalf("handler report = %+v", rep)
		}

		// Fixing KV clears the error.
		fc.Put(prefix+"/LOG_LEVEL", "debug")
		fc.Delete(prefix + "/RATE_BURST")
		time.Sleep(time.Second)
		synctest.Wait()
		if c.Err() != nil || c.Load().LogLevel != "debug" || gauge(t, reader, semconv.MetricConfigInvalid) != 0 {
			t.Fatalf("after fix: err %v, value %+v", c.Err(), c.Load())
		}

		// Deleting a key falls back to the environment.
		fc.Delete(prefix + "/LOG_LEVEL")
		time.Sleep(time.Second)
		synctest.Wait()
		if got := c.Load().LogLevel; got != "warn" {
			t.Fatalf("after delete LogLevel = %q, want the environment's warn", got)
		}
	})
}

func TestValidateMethodRunsOnChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		c := start(t, fc)
		fc.Put(prefix+"/RATE_LIMIT", "5000") // needs RATE_BURST >= 50
		time.Sleep(time.Second)
		synctest.Wait()
		if c.Load().RateLimit != 100 || !strings.Contains(c.Err().Error(), "RATE_BURST") {
			t.Fatalf("value %+v, err %v", c.Load(), c.Err())
		}
		fc.Put(prefix+"/RATE_BURST", "50")
		time.Sleep(time.Second)
		synctest.Wait()
		if c.Load().RateLimit != 5000 || c.Err() != nil {
			t.Fatalf("value %+v, err %v", c.Load(), c.Err())
		}
	})
}

func TestNonReloadableAndUnknownKeysAreReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		fc.Put(prefix+"/PORT", "1")
		fc.Put(prefix+"/NO_SUCH", "1")
		fc.Put(prefix+"/sub/", "") // a folder
		fc.Put(prefix+"/LOG_LEVEL", "error")
		c := start(t, fc)
		s := c.Snapshot()
		if s.Value.Port != 9000 || s.Value.LogLevel != "error" || c.Err() != nil {
			t.Fatalf("value %+v err %v", s.Value, c.Err())
		}
		if len(s.Notices) != 2 || !strings.Contains(s.Notices[0], "NO_SUCH") ||
			!strings.Contains(s.Notices[1], `sets PORT, which is not reloadable: not applied`) {
			t.Fatalf("notices = %q", s.Notices)
		}
		if st := source(t, s, "PORT"); st.Source != dynconfig.SourceEnv {
			t.Fatalf("PORT = %+v", st)
		}
	})
}

func TestConflictingKeysAreRejected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		fc.Put(prefix+"/LOG_LEVEL", "error")
		fc.Put(prefix+"/log_level", "debug")
		c := start(t, fc)
		if c.Load().LogLevel != "warn" || !strings.Contains(c.Err().Error(), "both set LOG_LEVEL") {
			t.Fatalf("value %+v err %v", c.Load(), c.Err())
		}
	})
}

func TestSecretsAreRedactedButChangesSeen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		fc.Put(prefix+"/API_KEY", "one")
		c := start(t, fc)
		var rec recorder
		defer c.Subscribe(rec.record)()
		fc.Put(prefix+"/API_KEY", "two")
		time.Sleep(time.Second)
		synctest.Wait()
		if c.Load().APIKey.Reveal() != "two" || !slices.Equal(rec.all()[0], []string{"API_KEY"}) {
			t.Fatalf("value %q changes %v", c.Load().APIKey.Reveal(), rec.all())
		}
		body := httpGet(t, c.Handler())
		if strings.Contains(body, "two") || !strings.Contains(body, "[REDACTED]") {
			t.Fatalf("handler leaks the secret or does not mark it:\n%s", body)
		}
	})
}

func TestKVOverrideHidesFileVariable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		fc.Put(prefix+"/API_KEY", "from-kv")
		lookup := config.MapLookup(map[string]string{"API_KEY_FILE": "/run/secrets/key"})
		c := start(t, fc, dynconfig.WithLookup(lookup), dynconfig.WithReadFile(func(string) ([]byte, error) { return []byte("from-file"), nil }))
		if got := c.Load().APIKey.Reveal(); got != "from-kv" || c.Err() != nil {
			t.Fatalf("APIKey %q err %v", got, c.Err())
		}
	})
}

func TestWatchBacksOffAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		fc.SetError(errors.New("connection refused"))
		reader := metric.NewManualReader()
		c := start(t, fc, dynconfig.WithMeterProvider(metric.NewMeterProvider(metric.WithReader(reader))))
		if c.Err() == nil || report(t, c).WatchError == "" {
			t.Fatal("no error visible while Consul is unreachable")
		}
		time.Sleep(10 * time.Minute)
		// Full jitter with a 10s cap: about 10 minutes / 5s average = 120 queries, never thousands.
		if n := fc.Queries(); n > 200 {
			t.Fatalf("%d queries in 10 minutes of errors: the watch does not back off", n)
		}
		if n := counter(t, reader, semconv.MetricConfigWatchErrors, ""); n != int64(fc.Queries()) {
			t.Fatalf("%s = %d, queries %d", semconv.MetricConfigWatchErrors, n, fc.Queries())
		}
		fc.SetError(nil)
		fc.Put(prefix+"/LOG_LEVEL", "debug")
		time.Sleep(dynconfig.DefaultBackoffMax + time.Second)
		synctest.Wait()
		if c.Load().LogLevel != "debug" || c.Err() != nil {
			t.Fatalf("after recovery: %+v err %v", c.Load(), c.Err())
		}
		// Idle: one blocking query per wait time.
		before := fc.Queries()
		time.Sleep(10 * time.Minute)
		if n := fc.Queries() - before; n > 11 {
			t.Fatalf("%d queries in 10 idle minutes, want one per minute", n)
		}
	})
}

// scripted answers List from a fixed list of results and records the wait indexes it was asked for.
type scripted struct {
	mu      sync.Mutex
	results []uint64
	asked   []uint64
}

func (s *scripted) List(ctx context.Context, _ string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error) {
	s.mu.Lock()
	s.asked = append(s.asked, q.WaitIndex)
	if len(s.results) == 0 {
		s.mu.Unlock()
		<-ctx.Done()
		return nil, nil, ctx.Err()
	}
	idx := s.results[0]
	s.results = s.results[1:]
	s.mu.Unlock()
	return api.KVPairs{{Key: prefix + "/LOG_LEVEL", Value: []byte("debug")}}, &api.QueryMeta{LastIndex: idx}, nil
}

func TestIndexResetAndZero(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &scripted{results: []uint64{0, 50, 60, 7, 8}}
		start(t, s)
		time.Sleep(time.Second)
		synctest.Wait()
		s.mu.Lock()
		defer s.mu.Unlock()
		// 0 is never used as a wait index after a read (it becomes 1); 7 < 60: start over from 0.
		want := []uint64{0, 1, 50, 60, 0, 8}
		if !slices.Equal(s.asked, want) {
			t.Fatalf("wait indexes = %v, want %v", s.asked, want)
		}
	})
}

func TestStartStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		c, err := dynconfig.New[Settings](fc, prefix, dynconfig.WithLookup(env))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(context.Background()); err != nil {
			t.Fatalf("Stop before Start: %v", err)
		}
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(context.Background()); !errors.Is(err, dynconfig.ErrStarted) {
			t.Fatalf("second Start: %v", err)
		}
		for range 2 {
			if err := c.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestNewRejectsBadArguments(t *testing.T) {
	if _, err := dynconfig.New[Settings](nil, prefix); err == nil {
		t.Error("nil KV accepted")
	}
	if _, err := dynconfig.New[Settings](coordinationtest.New(), "/"); err == nil {
		t.Error("empty prefix accepted")
	}
	if _, err := dynconfig.New[int](coordinationtest.New(), prefix); err == nil {
		t.Error("non-struct accepted")
	}
}

func TestHandlerMethods(t *testing.T) {
	c, err := dynconfig.New[Settings](coordinationtest.New(), prefix, dynconfig.WithLookup(env))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	c.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/debug/config", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST = %d", rec.Code)
	}
}

// FuzzKVOverlay feeds arbitrary KV keys and values through decoding and validation: the Config must
// never panic, must keep a complete snapshot, and must either apply the value or keep the old one
// with an error.
func FuzzKVOverlay(f *testing.F) {
	for _, s := range [][2]string{
		{"RATE_LIMIT", "12.5"}, {"rate_limit", "-1"}, {"FEATURES", "a:true,b:false"}, {"FEATURES", "a"},
		{"BREAKER_RATIO", "2"}, {"PORT", "1"}, {"API_KEY_FILE", "/x"}, {"x/y", "z"}, {"", ""}, {"LOG_LEVEL", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		fc := coordinationtest.New()
		fc.Put(prefix+"/"+key, value)
		c, err := dynconfig.New[Settings](fc, prefix, dynconfig.WithLookup(env))
		if err != nil {
			t.Fatal(err)
		}
		envOnly := *c.Load()
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		s := c.Snapshot()
		if s.Value == nil || len(s.Settings) != 9 {
			t.Fatalf("incomplete snapshot: %+v", s)
		}
		if c.Err() != nil {
			if s.Index != 0 || s.Value.RateLimit != envOnly.RateLimit {
				t.Fatalf("rejected change altered the config: %+v", s.Value)
			}
		}
	})
}

func counter(t *testing.T, r *metric.ManualReader, name, outcome string) int64 {
	t.Helper()
	var n int64
	for _, dp := range points(t, r, name) {
		if outcome == "" {
			n += dp.Value
			continue
		}
		if v, ok := dp.Attributes.Value(semconv.AttrConfigOutcome); ok && v.AsString() == outcome {
			n += dp.Value
		}
	}
	return n
}

func gauge(t *testing.T, r *metric.ManualReader, name string) int64 {
	t.Helper()
	p := points(t, r, name)
	if len(p) != 1 {
		t.Fatalf("%s has %d points", name, len(p))
	}
	return p[0].Value
}

// points returns the data points of the metric name, which must be in the scheme's dynconfig scope
// and carry the configuration's prefix on every point.
func points(t *testing.T, r *metric.ManualReader, name string) []metricdata.DataPoint[int64] {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			if sm.Scope.Name != semconv.ScopeDynconfig {
				t.Fatalf("%s in scope %q, want %q", name, sm.Scope.Name, semconv.ScopeDynconfig)
			}
			var dps []metricdata.DataPoint[int64]
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				dps = d.DataPoints
			case metricdata.Gauge[int64]:
				dps = d.DataPoints
			}
			for _, dp := range dps {
				if v, _ := dp.Attributes.Value(semconv.AttrConfigPrefix); v.AsString() != prefix+"/" {
					t.Fatalf("%s point has %s=%q, want %q", name, semconv.AttrConfigPrefix, v.AsString(), prefix+"/")
				}
			}
			return dps
		}
	}
	return nil
}

func httpGet(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/config", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET = %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	return rec.Body.String()
}

func report(t *testing.T, c *dynconfig.Config[Settings]) dynconfig.Report {
	t.Helper()
	var r dynconfig.Report
	if err := json.Unmarshal([]byte(httpGet(t, c.Handler())), &r); err != nil {
		t.Fatal(err)
	}
	return r
}
