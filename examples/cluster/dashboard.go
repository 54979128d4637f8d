package main

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

//go:embed web
var webFS embed.FS

// State is the whole dashboard document, sent on every update.
type State struct {
	Now        time.Time         `json:"now"`
	Elapsed    float64           `json:"elapsed_s"`
	LoadStart  int64             `json:"load_start_ms,omitempty"` // unix ms; the origin of event offsets
	Duration   float64           `json:"duration_s"`              // 0: until Ctrl-C
	Chaos      bool              `json:"chaos"`
	Phase      string            `json:"phase"` // building, starting, running, stopping, done
	Registry   RegistryView      `json:"registry"`
	Instances  []InstanceView    `json:"instances"`
	Load       LoadView          `json:"load"`
	Events     []Event           `json:"events"`
	Dashboards map[string]string `json:"links,omitempty"`
	Services   []string          `json:"services"`
}

// InstanceView is an instance with its metrics and its share of its service's traffic.
type InstanceView struct {
	InstanceInfo
	InstanceMetrics
	Live       bool    `json:"live"`       // not killed or exited; a dead instance has no metrics or share
	Share      float64 `json:"share"`      // of the service's responses in the last second, 0-1
	Registered string  `json:"registered"` // registry status: passing, critical, "" (absent)
}

// LoadView is the load generator's side.
type LoadView struct {
	Rate     float64  `json:"rate"`
	Inflight int64    `json:"inflight"`
	Totals   Totals   `json:"totals"`
	Series   []second `json:"series"`
}

// dashboard serves the page, the state as JSON (/api/state), live updates as server-sent events
// (/api/events) and chaos actions (POST /api/chaos).
type dashboard struct {
	state func() State
	act   func(action, target string) error

	mu      sync.Mutex
	clients map[chan []byte]struct{}
	srv     *http.Server
	ln      net.Listener
	page    []byte // index.html
	done    chan struct{}
}

func newDashboard(addr string, state func() State, act func(action, target string) error) (*dashboard, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("dashboard: %s is in use (is another demo still running?); choose another address with -dashboard, "+
			"for example -dashboard 127.0.0.1:8089, or -dashboard 127.0.0.1:0 for any free port, or -dashboard '' for none: %w", addr, err)
	}
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	d := &dashboard{state: state, act: act, clients: map[chan []byte]struct{}{}, ln: ln, done: make(chan struct{})}
	static, err := fs.Sub(webFS, "web")
	if err != nil {
		return nil, err
	}
	_ = mime.AddExtensionType(".js", "text/javascript; charset=utf-8")
	mux := http.NewServeMux()
	page, err := fs.ReadFile(static, "index.html")
	if err != nil {
		return nil, err
	}
	d.page = page
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /{$}", d.servePage)
	mux.HandleFunc("GET /api/state", d.serveState)
	mux.HandleFunc("GET /api/events", d.serveEvents)
	mux.HandleFunc("POST /api/chaos", d.serveChaos)
	d.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(d.done)
		_ = d.srv.Serve(ln)
	}()
	return d, nil
}

// URL is the dashboard's address for a browser.
func (d *dashboard) URL() string { return "http://" + d.ln.Addr().String() + "/" }

// initialMarker is where servePage puts the current state into index.html.
const initialMarker = "<!--initial-state-->"

// servePage serves index.html with the current state inside it, so that the first paint already
// shows the cluster (the page renders it before the event stream connects).
func (d *dashboard) servePage(w http.ResponseWriter, _ *http.Request) {
	st, err := json.Marshal(d.state()) // escapes <, > and &: safe inside a script element
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	before, after, _ := bytes.Cut(d.page, []byte(initialMarker))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(before)
	_, _ = fmt.Fprintf(w, `<script id="initial-state" type="application/json">%s</script>`, st)
	_, _ = w.Write(after)
}

func (d *dashboard) serveState(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(d.state())
}

// serveEvents streams the state as server-sent events: one "state" event now and on every
// broadcast, until the client goes away or the dashboard closes.
func (d *dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch := make(chan []byte, 4)
	d.mu.Lock()
	d.clients[ch] = struct{}{}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.clients, ch)
		d.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	first, err := json.Marshal(d.state())
	if err != nil {
		return
	}
	write := func(b []byte) bool {
		if _, err := fmt.Fprintf(w, "event: state\ndata: %s\n\n", b); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	if !write(first) {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-d.done:
			return
		case b := <-ch:
			if !write(b) {
				return
			}
		}
	}
}

// broadcast sends the current state to every connected browser; a browser too slow to take it
// misses this update and gets the next.
func (d *dashboard) broadcast() {
	b, err := json.Marshal(d.state())
	if err != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for ch := range d.clients {
		select {
		case ch <- b:
		default:
		}
	}
}

// serveChaos runs an action: {"action":"kill","target":"pricing-2"}. It insists on a JSON body, so
// that a web page elsewhere cannot post a plain form to the dashboard on loopback (a JSON POST from
// another origin needs a CORS preflight, which is never granted).
func (d *dashboard) serveChaos(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		http.Error(w, "Content-Type must be application/json", http.StatusUnsupportedMediaType)
		return
	}
	var req struct {
		Action string `json:"action"`
		Target string `json:"target"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := d.act(req.Action, req.Target); err != nil {
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// Close stops the server: event streams end, then in-flight requests get up to 2 s.
func (d *dashboard) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := d.srv.Shutdown(ctx) // closes d.done's Serve; streams see d.done below
	<-d.done
	if errors.Is(err, context.DeadlineExceeded) {
		return d.srv.Close()
	}
	return err
}
