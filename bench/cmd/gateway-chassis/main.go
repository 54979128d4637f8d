// Command gateway-chassis is the first hop of the TCP benchmark's two-hop path: a Chassis service
// whose GET /hello/{name} calls the "backend" service through svc.Client (static discovery:
// DISCOVERY_STATIC_BACKEND=host:port) and copies its response, as a user's gateway or BFF would.
package main

import (
	"io"
	"net/http"

	"github.com/cloudchassis/kit/chassis"
)

func main() {
	chassis.Main("gateway", func(svc *chassis.Service) error {
		backend := svc.Client("backend")
		svc.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
			req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://backend/hello/"+r.PathValue("name"), nil)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			resp, err := backend.Do(req)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
			w.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(w, resp.Body)
		})
		return nil
	})
}
