package telemetry

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

var (
	cpuUser   = attribute.NewSet(attribute.String("cpu.mode", "user"))
	cpuSystem = attribute.NewSet(attribute.String("cpu.mode", "system"))
)

// procStats is what readProcStats found; fds is -1 where the platform does not say.
type procStats struct {
	cpuOK              bool
	userCPU, systemCPU float64
	rss, fds           int64
}

// processStart is when this process began, as near as a library can tell.
var processStart = time.Now()

// startProcessMetrics registers the process metrics of the semantic conventions that are cheap to
// read: CPU time and resident memory (where the platform exposes them), open file descriptors and
// uptime. They are observed only when a reader collects.
func startProcessMetrics(m metric.Meter) error {
	cpu, err := m.Float64ObservableCounter("process.cpu.time", metric.WithUnit("s"),
		metric.WithDescription("Total CPU seconds broken down by different CPU modes."))
	if err != nil {
		return err
	}
	mem, err := m.Int64ObservableUpDownCounter("process.memory.usage", metric.WithUnit("By"),
		metric.WithDescription("The amount of physical memory in use."))
	if err != nil {
		return err
	}
	fds, err := m.Int64ObservableUpDownCounter("process.unix.file_descriptor.count", metric.WithUnit("{file_descriptor}"),
		metric.WithDescription("Number of unix file descriptors in use by the process."))
	if err != nil {
		return err
	}
	uptime, err := m.Float64ObservableGauge("process.uptime", metric.WithUnit("s"),
		metric.WithDescription("The time the process has been running."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := readProcStats()
		if st.cpuOK {
			o.ObserveFloat64(cpu, st.userCPU, metric.WithAttributeSet(cpuUser))
			o.ObserveFloat64(cpu, st.systemCPU, metric.WithAttributeSet(cpuSystem))
		}
		if st.rss > 0 {
			o.ObserveInt64(mem, st.rss)
		}
		if st.fds >= 0 {
			o.ObserveInt64(fds, st.fds)
		}
		o.ObserveFloat64(uptime, time.Since(processStart).Seconds())
		return nil
	}, cpu, mem, fds, uptime)
	return err
}
