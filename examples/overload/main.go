// Command overload shows adaptive load shedding keeping a service useful at three times its
// capacity. It starts a service on 127.0.0.1 whose handler has a fixed capacity (Workers workers
// that each take Service per request, like a connection pool in front of a database), measures
// its unloaded latency and its capacity, then drives it open-loop at three times that capacity,
// first without and then with guard.Shedder in front, and prints goodput and admitted latency.
//
//	go run ./examples/overload            # about 30 s
//	go run ./examples/overload -phase 10s # longer phases, steadier figures
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	cfg := DefaultConfig()
	flag.IntVar(&cfg.Workers, "workers", cfg.Workers, "concurrent requests the service can work on")
	flag.DurationVar(&cfg.Service, "service", cfg.Service, "time one request takes on a worker")
	flag.DurationVar(&cfg.Phase, "phase", cfg.Phase, "length of each measured phase")
	flag.Float64Var(&cfg.Overload, "overload", cfg.Overload, "offered load as a multiple of the measured capacity")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 10*cfg.Phase+time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "overload:", err)
		os.Exit(1)
	}
	fmt.Println(rep)
}
