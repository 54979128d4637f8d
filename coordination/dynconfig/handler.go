package dynconfig

import (
	"encoding/json"
	"net/http"
	"time"
)

// Report is the JSON document the Handler serves.
type Report struct {
	Prefix   string    `json:"prefix"`
	Index    uint64    `json:"index"`   // KV index of the configuration in effect
	Updated  time.Time `json:"updated"` // when it was built
	Rejected *Rejected `json:"rejected,omitempty"`
	// WatchError is the last KV query error while Consul cannot be read.
	WatchError string    `json:"watch_error,omitempty"`
	Notices    []string  `json:"notices,omitempty"`
	Settings   []Setting `json:"settings"`
}

// Rejected describes KV content that was not applied.
type Rejected struct {
	Index uint64 `json:"index"`
	Error string `json:"error"`
}

// Report returns the current state: the effective configuration with the source of every value
// (secrets redacted), ignored keys, and the rejection or watch error, if any.
func (c *Config[T]) Report() Report {
	snap := c.cur.Load()
	r := Report{Prefix: c.prefix, Index: snap.Index, Updated: snap.Time, Notices: snap.Notices, Settings: snap.Settings}
	c.mu.Lock()
	if c.rejected != nil {
		r.Rejected = &Rejected{Index: c.rejected.Index, Error: c.rejected.Err.Error()}
	}
	if c.watchErr != nil {
		r.WatchError = c.watchErr.Error()
	}
	c.mu.Unlock()
	return r
}

// Handler serves Report as JSON on GET, for an admin endpoint such as /debug/config. Secrets are
// redacted, but the handler still shows the service's configuration: mount it on the admin port only.
func (c *Config[T]) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		b, err := json.MarshalIndent(c.Report(), "", "  ")
		if err != nil {
			http.Error(w, "encoding report: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(append(b, '\n'))
	})
}
