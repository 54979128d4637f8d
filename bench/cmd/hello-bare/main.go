// Command hello-bare is the baseline of the TCP benchmark (../../tcp): examples/hello's route on a
// bare net/http server, nothing else. As the two-hop backend it also counts the TCP connections it
// accepts (-count-conns), served at GET /debug/conns, so that the driver can tell how many new
// connections a gateway opened per request.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/cloudchassis/kit/bench/internal/hello"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	admin := flag.String("admin", "", "pprof listen address; empty serves none")
	countConns := flag.Bool("count-conns", false, "count accepted connections, served at GET /debug/conns")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello/{name}", hello.Handle)
	srv := &http.Server{Handler: mux}
	if *countConns {
		var conns atomic.Int64
		srv.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
		mux.HandleFunc("GET /debug/conns", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, conns.Load())
		})
	}
	if err := hello.Admin(context.Background(), *admin, nil); err != nil {
		log.Fatal(err)
	}
	if err := hello.Serve(srv, *addr); err != nil {
		log.Fatal(err)
	}
}
