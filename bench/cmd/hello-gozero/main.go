// Command hello-gozero is examples/hello's route on go-zero's rest server as goctl generates it, with
// go-zero's default middleware (tracing, access log, Prometheus, max connections, breaker, shedding,
// timeout, recovery, metrics, body limit, gunzip), its dev server (metrics and pprof) on -admin, and
// OTLP/HTTP trace export at the ratio of OTEL_TRACES_SAMPLER_ARG to OTEL_EXPORTER_OTLP_ENDPOINT when
// set. The log level is error (-log-level): at info, go-zero writes a line per request.
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"

	"github.com/cloudchassis/kit/bench/internal/hello"
	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/rest"
	"github.com/zeromicro/go-zero/rest/httpx"
)

// Request is the route's input, bound by httpx.Parse like goctl's generated types.
type Request struct {
	Name string `path:"name"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	admin := flag.String("admin", "", "dev server (metrics, pprof) address; empty disables it")
	level := flag.String("log-level", "error", "go-zero log level (info logs every request)")
	flag.Parse()

	var c rest.RestConf
	if err := conf.FillDefault(&c); err != nil {
		log.Fatal(err)
	}
	c.Name = "hello"
	host, port, err := splitHostPort(*addr)
	if err != nil {
		log.Fatal(err)
	}
	c.Host, c.Port = host, port
	c.Log.Level = *level
	c.Log.Mode = "console" // standard output, redirected to a file by the driver
	c.DevServer.Enabled = *admin != ""
	if *admin != "" {
		if c.DevServer.Host, c.DevServer.Port, err = splitHostPort(*admin); err != nil {
			log.Fatal(err)
		}
	}
	c.Telemetry.Disabled = true
	if ep := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); ep != "" {
		u, err := url.Parse(ep)
		if err != nil {
			log.Fatal(err)
		}
		ratio := 1.0
		if v := os.Getenv("OTEL_TRACES_SAMPLER_ARG"); v != "" {
			if ratio, err = strconv.ParseFloat(v, 64); err != nil {
				log.Fatal(err)
			}
		}
		c.Telemetry.Disabled = false
		c.Telemetry.Name = "hello"
		c.Telemetry.Endpoint = u.Host
		c.Telemetry.Batcher = "otlphttp"
		c.Telemetry.OtlpHttpPath = "/v1/traces"
		c.Telemetry.Sampler = ratio
	}

	server := rest.MustNewServer(c)
	defer server.Stop()
	server.AddRoute(rest.Route{Method: http.MethodGet, Path: "/hello/:name", Handler: func(w http.ResponseWriter, r *http.Request) {
		var req Request
		if err := httpx.Parse(r, &req); err != nil {
			httpx.ErrorCtx(r.Context(), w, err)
			return
		}
		httpx.OkJsonCtx(r.Context(), w, hello.Greet(req.Name))
	}})
	server.Start()
}

func splitHostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	return h, n, err
}
