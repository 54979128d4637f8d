package telemetry

import (
	"context"
	"errors"
	"sync"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap"
)

// sharedExport sends to an OTLP exporter, every interval, what the Prometheus reader collects, so
// that a service exporting both ways aggregates each measurement once. With a second reader the
// SDK keeps a second aggregation of every instrument and every Record updates both: one more
// histogram update per request for the RED metrics, about a microsecond over TCP (BENCHMARKS.md,
// issue 15), for data that is the same when both are cumulative. It is used only then: with
// OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE delta or lowmemory, OTLP gets a periodic reader
// of its own. It behaves as sdkmetric.PeriodicReader: an export per interval, each bounded by
// timeout, a last one at shutdown, errors logged.
type sharedExport struct {
	reader   sdkmetric.Reader // the Prometheus exporter's reader
	exp      sdkmetric.Exporter
	interval time.Duration
	timeout  time.Duration
	log      func() *zap.Logger

	mu   sync.Mutex // one collect and export at a time
	stop chan struct{}
	done chan struct{}
}

func newSharedExport(reader sdkmetric.Reader, exp sdkmetric.Exporter, interval, timeout time.Duration, log func() *zap.Logger) *sharedExport {
	s := &sharedExport{reader: reader, exp: exp, interval: interval, timeout: timeout, log: log,
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *sharedExport) run() {
	defer close(s.done)
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
			if err := s.export(ctx); err != nil {
				if l := s.log(); l != nil {
					l.Warn("otlp metric export failed", zap.Error(err))
				}
			}
			cancel()
		}
	}
}

func (s *sharedExport) export(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rm metricdata.ResourceMetrics
	if err := s.reader.Collect(ctx, &rm); err != nil {
		return err
	}
	if len(rm.ScopeMetrics) == 0 {
		return nil
	}
	return s.exp.Export(ctx, &rm)
}

// shutdown stops the interval, exports once more and shuts the exporter down. It must run before
// the MeterProvider's shutdown, which closes the reader it collects from.
func (s *sharedExport) shutdown(ctx context.Context) error {
	close(s.stop)
	<-s.done
	return errors.Join(s.export(ctx), s.exp.Shutdown(ctx))
}
