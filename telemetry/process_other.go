//go:build !unix

package telemetry

import "go.opentelemetry.io/otel/attribute"

var (
	cpuUser   = attribute.NewSet(attribute.String("cpu.mode", "user"))
	cpuSystem = attribute.NewSet(attribute.String("cpu.mode", "system"))
)

type procStats struct {
	cpuOK              bool
	userCPU, systemCPU float64
	rss, fds           int64
}

func readProcStats() procStats { return procStats{fds: -1} }
