// Command hop is a test service for the deadline propagation test (deadline_test.go). GET /work
// forwards to the service named by HOP_NEXT through svc.Client when it is set; otherwise it works
// until its request context ends, and GET /report then describes that context: the deadline the
// request arrived with and when and why it ended.
package main

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/resilience"
)

type config struct {
	Next string `envconfig:"HOP_NEXT" desc:"service to forward GET /work to; empty: do the work here"`
}

// report describes the request context of the last GET /work done here.
type report struct {
	Header      string        `json:"header"`       // the Chassis-Timeout-Ms the request carried
	HasDeadline bool          `json:"has_deadline"` // whether its context had a deadline
	Budget      time.Duration `json:"budget"`       // the deadline minus the time work started
	Started     int64         `json:"started"`      // unix ns
	Ended       int64         `json:"ended"`        // unix ns: when the context ended
	Err         string        `json:"err"`          // the context's error
}

func main() {
	var cfg config
	chassis.Main("hop", func(svc *chassis.Service) error {
		var (
			mu   sync.Mutex
			last *report
			done = make(chan struct{})
			once sync.Once
		)
		svc.HandleFunc("GET /work", func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			if cfg.Next != "" {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cfg.Next+"/work", nil)
				resp, err := svc.Client(cfg.Next).Do(req)
				if err != nil {
					http.Error(w, err.Error(), http.StatusGatewayTimeout)
					return
				}
				defer resp.Body.Close()
				w.WriteHeader(resp.StatusCode)
				_, _ = io.Copy(w, resp.Body)
				return
			}
			rep := &report{Header: r.Header.Get(resilience.TimeoutHeader), Started: time.Now().UnixNano()}
			if dl, ok := ctx.Deadline(); ok {
				rep.HasDeadline, rep.Budget = true, time.Until(dl)
			}
			<-ctx.Done() // the work: bounded by the request's deadline (HTTP_REQUEST_TIMEOUT at most)
			rep.Ended, rep.Err = time.Now().UnixNano(), ctx.Err().Error()
			mu.Lock()
			last = rep
			mu.Unlock()
			once.Do(func() { close(done) })
			http.Error(w, "out of time", http.StatusGatewayTimeout)
		})
		svc.HandleFunc("GET /report", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-done:
			case <-r.Context().Done():
				http.Error(w, "no work ended", http.StatusGatewayTimeout)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(last)
		})
		return nil
	}, chassis.WithConfig(&cfg))
}
