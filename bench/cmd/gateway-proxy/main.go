// Command gateway-proxy is the baseline of the TCP benchmark's two-hop path: net/http/httputil's
// ReverseProxy to one backend, with http.DefaultTransport (-idle-per-host 0, at most two idle
// connections per host) or with a copy of it keeping more idle connections per host.
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/cloudchassis/kit/bench/internal/hello"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	admin := flag.String("admin", "", "pprof listen address; empty serves none")
	backend := flag.String("backend", "127.0.0.1:8081", "backend host:port")
	idle := flag.Int("idle-per-host", 0, "MaxIdleConnsPerHost of a copy of http.DefaultTransport; 0 uses http.DefaultTransport itself")
	flag.Parse()

	target := &url.URL{Scheme: "http", Host: *backend}
	proxy := httputil.NewSingleHostReverseProxy(target)
	if *idle > 0 {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = *idle
		t.MaxIdleConns = max(t.MaxIdleConns, *idle)
		proxy.Transport = t
	}
	if err := hello.Admin(context.Background(), *admin, nil); err != nil {
		log.Fatal(err)
	}
	if err := hello.Serve(&http.Server{Handler: proxy}, *addr); err != nil {
		log.Fatal(err)
	}
}
