package lb

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Metric names not (yet) in telemetry/semconv. They follow its scheme; see docs/lb.md.
const (
	// metricPanic is a gauge that is 1 while the balancer is in panic mode ({state}), with
	// AttrPeerService.
	metricPanic = "chassis.lb.panic"
	// metricPanics counts entries into panic mode ({panic}) with AttrPeerService.
	metricPanics = "chassis.lb.panics"
	// metricPicks counts picks per instance ({pick}) with AttrPeerService and attrInstanceID; only
	// with WithPerInstanceMetrics.
	metricPicks = "chassis.lb.picks"
	// attrInstanceID is the instance ID (bounded by the snapshot, unlike addresses in general).
	attrInstanceID = "chassis.instance.id"
)

type instruments struct {
	ejections  metric.Int64Counter
	panics     metric.Int64Counter
	rejections metric.Int64Counter
	service    metric.MeasurementOption // peer.service, built once
	serviceAdd []metric.AddOption
	reasonAdds map[string][]metric.AddOption
	noneAdd    []metric.AddOption // peer.service, chassis.rejection.reason=no_instances
	reg        metric.Registration
}

func newInstruments(b *Balancer) (*instruments, error) {
	meter := b.opts.meterProvider().Meter(semconv.ScopeLB)
	m := &instruments{
		service:    metric.WithAttributeSet(attribute.NewSet(attribute.String(semconv.AttrPeerService, b.service))),
		reasonAdds: map[string][]metric.AddOption{},
	}
	m.serviceAdd = []metric.AddOption{m.service}
	m.noneAdd = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(
		attribute.String(semconv.AttrPeerService, b.service),
		attribute.String(semconv.AttrRejectionReason, semconv.ReasonNoInstances)))}
	for _, r := range []string{semconv.ReasonConsecutiveError, semconv.ReasonSuccessRate, semconv.ReasonLatency} {
		m.reasonAdds[r] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(
			attribute.String(semconv.AttrPeerService, b.service),
			attribute.String(semconv.AttrEjectionReason, r)))}
	}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	m.ejections, err = meter.Int64Counter(semconv.MetricLBEjections, metric.WithUnit(semconv.UnitEjection),
		metric.WithDescription("Outlier ejections of instances, by reason."))
	add(err)
	m.panics, err = meter.Int64Counter(metricPanics, metric.WithUnit("{panic}"),
		metric.WithDescription("Entries into panic mode: too few healthy instances, ejection ignored."))
	add(err)
	// A pick that finds nothing is a local rejection like resilience's, counted into the same name
	// with the same unit and description (the Prometheus exporter merges one name's series across
	// scopes only when they agree).
	m.rejections, err = meter.Int64Counter(semconv.MetricClientRejections, metric.WithUnit(semconv.UnitRequest),
		metric.WithDescription("Calls refused locally before reaching the network, by reason."))
	add(err)
	ejected, err := meter.Int64ObservableGauge(semconv.MetricLBEjected, metric.WithUnit(semconv.UnitInstance),
		metric.WithDescription("Instances currently ejected."))
	add(err)
	panicking, err := meter.Int64ObservableGauge(metricPanic, metric.WithUnit(semconv.UnitState),
		metric.WithDescription("1 while the balancer is in panic mode."))
	add(err)
	observables := []metric.Observable{ejected, panicking}
	var picks metric.Int64ObservableCounter
	if b.opts.perInstance {
		picks, err = meter.Int64ObservableCounter(metricPicks, metric.WithUnit("{pick}"),
			metric.WithDescription("Picks of each instance."))
		add(err)
		observables = append(observables, picks)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	obs := []metric.ObserveOption{m.service}
	m.reg, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		b.mu.Lock()
		n, p := int64(b.ejected), int64(0)
		if b.panicking {
			p = 1
		}
		order := b.order
		b.mu.Unlock()
		o.ObserveInt64(ejected, n, obs...)
		o.ObserveInt64(panicking, p, obs...)
		if picks != nil {
			for _, e := range order {
				o.ObserveInt64(picks, int64(e.picks.Load()), e.attrs...)
			}
		}
		return nil
	}, observables...)
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (m *instruments) ejection(reason string) {
	m.ejections.Add(context.Background(), 1, m.reasonAdds[reason]...)
}

func (m *instruments) panicEntered() { m.panics.Add(context.Background(), 1, m.serviceAdd...) }

// noInstances counts a pick that found no instance, and adds the rejection to ctx's recording span.
func (m *instruments) noInstances(ctx context.Context) {
	m.rejections.Add(ctx, 1, m.noneAdd...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(semconv.EventRejected, trace.WithAttributes(
			attribute.String(semconv.AttrRejectionReason, semconv.ReasonNoInstances)))
	}
}

// ejectionEvent adds the ejection of instance, which the call whose context is ctx caused, to ctx's
// recording span.
func ejectionEvent(ctx context.Context, reason, instance string) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(semconv.EventEjection, trace.WithAttributes(
			attribute.String(semconv.AttrEjectionReason, reason),
			attribute.String(semconv.AttrInstance, instance)))
	}
}

func (m *instruments) unregister() {
	if m.reg != nil {
		_ = m.reg.Unregister()
	}
}
