// Package dynconfig overlays Consul KV on a configuration loaded from the environment, for the
// settings that must change without a restart: log level, rate limits, breaker thresholds, feature
// flags.
//
// Start with New, then Start and Stop (they fit lifecycle hooks), Load on every use, Subscribe to
// react to changes, and Handler for the admin port:
//
//	type Config struct {
//		Port      int     `envconfig:"PORT" default:"8080"`
//		LogLevel  string  `envconfig:"LOG_LEVEL" default:"info" validate:"oneof=debug info warn error" reload:"true"`
//		RateLimit float64 `envconfig:"RATE_LIMIT" default:"100" validate:"gt=0" reload:"true"`
//	}
//	cfg, err := dynconfig.New[Config](dynconfig.NewConsulKV(client), "config/catalog")
//	err = cfg.Start(ctx)
//	defer cfg.Stop(ctx)
//	limit := cfg.Load().RateLimit
//	admin.Handle("GET /debug/config", cfg.Handler())
//
// The struct is package config's, with the same tags; `reload:"true"` marks the fields that KV may
// change. KV key <prefix>/RATE_LIMIT (the variable's name, any letter case) overrides RATE_LIMIT.
// Every KV change is loaded and validated by config.Load as a whole, over the environment; a valid
// result is swapped in atomically (an atomic.Pointer to an immutable Snapshot), an invalid one is
// rejected with every problem listed and the previous value stays. Keys naming non-reloadable or
// unknown variables are reported in Snapshot.Notices, never applied.
//
// The watch uses blocking queries on /v1/kv/<prefix>/?recurse with the index, a minimum interval
// between queries, full-jitter backoff after errors and an index reset when it goes backwards, so it
// never spins. Reads use Consul's default mode; WithConsistent asks for consistent reads. See
// docs/coordination.md for metrics and the consistency trade-offs.
package dynconfig
