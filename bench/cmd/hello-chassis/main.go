// Command hello-chassis is examples/hello's route on a Chassis service, configured entirely by the
// environment as in production (PORT, ADMIN_PORT, ACCESS_LOG, OTEL_*; see the README's reference).
// The TCP benchmark (../../tcp) runs it in its default, access-log-off and OTLP-export
// configurations, with its log lines on a file (standard output redirected), not a terminal.
package main

import (
	"net/http"

	"github.com/cloudchassis/kit/bench/internal/hello"
	"github.com/cloudchassis/kit/chassis"
)

func main() {
	chassis.Main("hello", func(svc *chassis.Service) error {
		svc.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
			hello.Handle(w, r)
		})
		return nil
	})
}
