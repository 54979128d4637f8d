// Command hello is the smallest complete Chassis service: configuration from the environment, a
// public route, health probes, metrics, pprof and graceful shutdown.
//
//	go run ./examples/hello            # public :8080, admin :9090
//	curl localhost:8080/hello/world
//	curl localhost:9090/readyz
//	go run ./examples/hello -help      # every environment variable
package main

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/cloudchassis/kit/chassis"
)

// Config is hello's own configuration, read from the environment.
type Config struct {
	Greeting string        `envconfig:"GREETING" default:"Hello" desc:"word used to greet"`
	MaxDelay time.Duration `envconfig:"MAX_DELAY" default:"5s" desc:"largest ?delay= a request may ask for (to simulate work)"`
}

func main() {
	var cfg Config
	chassis.Main("hello", func(svc *chassis.Service) error {
		svc.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
			// ?delay=50ms simulates work, so that drains can be observed under load.
			if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil && d > 0 {
				select {
				case <-time.After(min(d, cfg.MaxDelay)):
				case <-r.Context().Done():
					return
				}
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]string{"message": cfg.Greeting + ", " + r.PathValue("name") + "!"})
		})
		return nil
	}, chassis.WithConfig(&cfg))
}
