package chassis

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/problem"
)

// Who may use the admin port's debug endpoints (ADMIN_DEBUG). The probes (/livez, /readyz,
// /startupz) and /metrics always answer everyone who reaches the port: kubelet and Prometheus come
// from other addresses. Every other admin route is a debug endpoint: pprof, /debug/loglevel (which
// changes the log level), /debug/info, and the routes added with HandleAdmin.
const (
	// AdminDebugLoopback, the default, serves debug endpoints to loopback peers (127.0.0.0/8, ::1),
	// which includes kubectl port-forward and a shell in the container, and to any peer that presents
	// ADMIN_TOKEN as a bearer token.
	AdminDebugLoopback = "loopback"
	// AdminDebugToken serves them only to requests with ADMIN_TOKEN, loopback peers included: use it
	// when a proxy on the same host forwards outside traffic, so that every peer looks local.
	AdminDebugToken = "token"
	// AdminDebugOpen serves them to anyone who reaches the admin port (the behaviour before
	// ADMIN_DEBUG existed): only for an admin port on a network you trust entirely.
	AdminDebugOpen = "open"
	// AdminDebugOff does not serve them at all (404).
	AdminDebugOff = "off"
)

// newAdminServer serves health, metrics, pprof, the log level and /debug/info. It has no write
// timeout, so that /debug/pprof/profile?seconds=30 can finish. The debug endpoints are behind
// adminAccess (ADMIN_DEBUG, ADMIN_TOKEN); the probes and /metrics are not.
func (s *Service) newAdminServer() *http.Server {
	mux := http.NewServeMux()
	s.health.Register(mux)
	mux.Handle("GET /metrics", s.tel.MetricsHandler())
	if acc := newAdminAccess(s.settings.AdminDebug, s.settings.AdminToken); acc.mode != AdminDebugOff {
		debugRoute := func(pattern string, h http.Handler) { mux.Handle(pattern, acc.wrap(h)) }
		debugRoute("/debug/loglevel", s.tel.LevelHandler())
		debugRoute("GET /debug/info", http.HandlerFunc(s.info))
		debugRoute("GET /debug/pprof/", http.HandlerFunc(pprof.Index))
		debugRoute("GET /debug/pprof/cmdline", http.HandlerFunc(pprof.Cmdline))
		debugRoute("GET /debug/pprof/profile", http.HandlerFunc(pprof.Profile))
		debugRoute("GET /debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
		debugRoute("POST /debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
		debugRoute("GET /debug/pprof/trace", http.HandlerFunc(pprof.Trace))
		for _, r := range s.adminRoutes {
			debugRoute(r.pattern, r.h)
		}
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

// adminAccess decides who may use the debug endpoints. The peer is the TCP peer (RemoteAddr), never a
// forwarded-for header, which any client can write.
type adminAccess struct {
	mode  string
	token *[sha256.Size]byte // digest of ADMIN_TOKEN; nil when unset
}

func newAdminAccess(mode string, token config.Secret) adminAccess {
	a := adminAccess{mode: mode}
	if a.mode == "" {
		a.mode = AdminDebugLoopback
	}
	if t := token.Reveal(); t != "" {
		sum := sha256.Sum256([]byte(t))
		a.token = &sum
	}
	return a
}

// allowed reports whether r may use a debug endpoint.
func (a adminAccess) allowed(r *http.Request) bool {
	switch a.mode {
	case AdminDebugOpen:
		return true
	case AdminDebugLoopback:
		if loopbackPeer(r.RemoteAddr) {
			return true
		}
	}
	return a.tokenValid(r)
}

// tokenValid compares digests in constant time, so neither the token's bytes nor its length leak
// through the time a refusal takes.
func (a adminAccess) tokenValid(r *http.Request) bool {
	if a.token == nil {
		return false
	}
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], a.token[:]) == 1
}

func (a adminAccess) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.allowed(r) {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		if a.token != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="admin"`)
			problem.Write(w, http.StatusUnauthorized, "", "debug endpoints need the admin token (Authorization: Bearer <ADMIN_TOKEN>)")
			return
		}
		problem.Write(w, http.StatusForbidden, "", "debug endpoints answer loopback peers only (ADMIN_DEBUG=loopback); "+
			"set ADMIN_TOKEN to let other peers in with a bearer token")
	})
}

// loopbackPeer reports whether a RemoteAddr ("ip:port") is a loopback address, IPv4-mapped IPv6
// included. Anything unparsable is not.
func loopbackPeer(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	return ap.Addr().Unmap().IsLoopback()
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
