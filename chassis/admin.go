package chassis

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/cloudchassis/kit/config"
)

// newAdminServer serves health, metrics, pprof, the log level and /debug/info. It has no write
// timeout, so that /debug/pprof/profile?seconds=30 can finish; it is meant for a private network.
func (s *Service) newAdminServer() *http.Server {
	mux := http.NewServeMux()
	s.health.Register(mux)
	mux.Handle("GET /metrics", s.tel.MetricsHandler())
	mux.Handle("/debug/loglevel", s.tel.LevelHandler())
	mux.HandleFunc("GET /debug/info", s.info)
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	for _, r := range s.adminRoutes {
		mux.Handle(r.pattern, r.h)
	}
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: s.settings.ReadHeaderTimeout,
		ReadTimeout:       s.settings.ReadTimeout,
		IdleTimeout:       s.settings.IdleTimeout,
		MaxHeaderBytes:    int(s.settings.MaxHeaderBytes),
		ErrorLog:          s.stdLog("admin"),
	}
}

// Info is the document /debug/info serves.
type Info struct {
	Service   string           `json:"service"`
	Version   string           `json:"version"`
	GoVersion string           `json:"go_version"`
	Module    string           `json:"module,omitempty"`
	Revision  string           `json:"vcs_revision,omitempty"`
	VCSTime   string           `json:"vcs_time,omitempty"`
	Modified  bool             `json:"vcs_modified,omitempty"`
	Started   time.Time        `json:"started"`
	Uptime    string           `json:"uptime"`
	Routes    []string         `json:"routes"`
	Settings  []config.Setting `json:"settings"`
	Config    []config.Setting `json:"config,omitempty"`
}

// Info describes the running service; every secret is redacted.
func (s *Service) Info() Info {
	in := Info{
		Service:   s.name,
		Version:   s.settings.Version,
		GoVersion: runtime.Version(),
		Started:   s.started,
		Uptime:    time.Since(s.started).Round(time.Millisecond).String(),
		Routes:    s.routes,
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		in.Module = bi.Main.Path
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				in.Revision = kv.Value
			case "vcs.time":
				in.VCSTime = kv.Value
			case "vcs.modified":
				in.Modified = kv.Value == "true"
			}
		}
	}
	opts := []config.Option{config.WithLookup(s.opts.lookup)}
	in.Settings, _ = config.Dump(&s.settings, opts...)
	for _, spec := range s.userCfg {
		d, _ := config.Dump(spec, opts...)
		in.Config = append(in.Config, d...)
	}
	return in
}

func (s *Service) info(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s.Info())
}
