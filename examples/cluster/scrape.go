package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"

	"github.com/cloudchassis/kit/grpcx"
)

// Prometheus names of the metrics the dashboard reads (docs/telemetry.md; the exporter turns dots
// into underscores and adds unit and _total suffixes).
const (
	promServerDuration   = "http_server_request_duration_seconds"
	promRPCDuration      = "rpc_server_call_duration_seconds" // gRPC calls (pricing serves the gateway over gRPC)
	promBreakerState     = "chassis_breaker_state"
	promLBEjected        = "chassis_lb_ejected"
	promLBEjections      = "chassis_lb_ejections_total"
	promDiscInstances    = "chassis_discovery_instances"
	promDiscAge          = "chassis_discovery_snapshot_age_seconds"
	promClientRetries    = "chassis_client_retries_total"
	promClientRejections = "chassis_client_rejections_total"
	promRateLimited      = "chassis_server_rate_limited_total"
	promShed             = "chassis_server_shed_total"
	promRSS              = "process_memory_usage_bytes"
	promGoroutines       = "go_goroutine_count"

	labelStatus      = "http_response_status_code"
	labelGRPCStatus  = "rpc_grpc_status_code"
	labelPeer        = "peer_service"
	labelBreakerInst = "chassis_breaker_instance"
	labelBreakerSt   = "chassis_breaker_state"
)

// scrape is what one read of an instance's /metrics yields.
type scrape struct {
	at       time.Time
	requests float64 // server requests answered, cumulative
	errors   float64 // of which 5xx
	buckets  []bucket
	breakers []Breaker
	peers    map[string]*PeerView
	rss      float64
	gor      float64 // goroutines
	limited  float64
	shed     float64
}

type bucket struct {
	le    float64
	count float64
}

// Breaker is one circuit breaker an instance holds, in a state other than closed.
type Breaker struct {
	Peer     string `json:"peer"`
	Instance string `json:"instance"`
	State    string `json:"state"`
}

// PeerView is what an instance knows about one dependency.
type PeerView struct {
	Instances  float64 `json:"instances"`
	AgeSeconds float64 `json:"age_s"`
	Ejected    float64 `json:"ejected"`
	Ejections  float64 `json:"ejections"`
	Retries    float64 `json:"retries"`
	Rejections float64 `json:"rejections"`
}

// InstanceMetrics is the dashboard's view of one instance, from the last two scrapes.
type InstanceMetrics struct {
	RPS        float64              `json:"rps"`
	ErrorRate  float64              `json:"error_rate"`
	P99Ms      float64              `json:"p99_ms"`
	RSSMB      float64              `json:"rss_mb"`
	Goroutines float64              `json:"goroutines"`
	Breakers   []Breaker            `json:"breakers,omitempty"`
	Peers      map[string]*PeerView `json:"peers,omitempty"`
	Limited    float64              `json:"rate_limited"`
	Shed       float64              `json:"shed"`
	ScrapeErr  string               `json:"scrape_error,omitempty"`
	ScrapedAgo float64              `json:"scraped_ago_s"`
}

// scraper reads every live instance's admin /metrics once per interval and keeps the last two
// reads per instance. It is safe for concurrent use.
type scraper struct {
	client *http.Client

	mu   sync.Mutex
	last map[string][2]*scrape // id -> previous, latest
	errs map[string]string
}

func newScraper() *scraper {
	return &scraper{client: &http.Client{Timeout: 2 * time.Second}, last: map[string][2]*scrape{}, errs: map[string]string{}}
}

// round scrapes the given instances concurrently.
func (s *scraper) round(ctx context.Context, targets map[string]string) {
	var wg sync.WaitGroup
	for id, admin := range targets {
		wg.Go(func() {
			sc, err := s.fetch(ctx, admin)
			s.mu.Lock()
			defer s.mu.Unlock()
			if err != nil {
				s.errs[id] = err.Error()
				return
			}
			delete(s.errs, id)
			prev := s.last[id]
			s.last[id] = [2]*scrape{prev[1], sc}
		})
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.last {
		if _, ok := targets[id]; !ok {
			delete(s.last, id)
			delete(s.errs, id)
		}
	}
}

func (s *scraper) fetch(ctx context.Context, admin string) (*scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	res, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", res.Status)
	}
	return parseMetrics(io.LimitReader(res.Body, 8<<20), time.Now())
}

// parseMetrics reads the Prometheus text format into a scrape.
func parseMetrics(r io.Reader, at time.Time) (*scrape, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	sc := &scrape{at: at, peers: map[string]*PeerView{}}
	peer := func(m *dto.Metric) *PeerView {
		name := label(m, labelPeer)
		pv := sc.peers[name]
		if pv == nil {
			pv = &PeerView{}
			sc.peers[name] = pv
		}
		return pv
	}
	les := map[float64]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			switch name {
			case promServerDuration, promRPCDuration:
				h := m.GetHistogram()
				n := float64(h.GetSampleCount())
				sc.requests += n
				if serverError(name, m) {
					sc.errors += n
				}
				inf := false
				for _, b := range h.GetBucket() {
					les[b.GetUpperBound()] += float64(b.GetCumulativeCount())
					inf = inf || math.IsInf(b.GetUpperBound(), 1)
				}
				if !inf { // the text format may leave the +Inf bucket implicit
					les[math.Inf(1)] += n
				}
			case promBreakerState:
				if m.GetGauge().GetValue() == 1 && label(m, labelBreakerSt) != "closed" {
					sc.breakers = append(sc.breakers, Breaker{Peer: label(m, labelPeer), Instance: label(m, labelBreakerInst), State: label(m, labelBreakerSt)})
				}
			case promLBEjected:
				peer(m).Ejected += m.GetGauge().GetValue()
			case promLBEjections:
				peer(m).Ejections += m.GetCounter().GetValue()
			case promDiscInstances:
				peer(m).Instances += m.GetGauge().GetValue()
			case promDiscAge:
				peer(m).AgeSeconds = max(peer(m).AgeSeconds, m.GetGauge().GetValue())
			case promClientRetries:
				peer(m).Retries += m.GetCounter().GetValue()
			case promClientRejections:
				peer(m).Rejections += m.GetCounter().GetValue()
			case promRateLimited:
				sc.limited += m.GetCounter().GetValue()
			case promShed:
				sc.shed += m.GetCounter().GetValue()
			case promRSS:
				sc.rss += m.GetGauge().GetValue()
			case promGoroutines:
				sc.gor += m.GetGauge().GetValue()
			}
		}
	}
	for le, c := range les {
		sc.buckets = append(sc.buckets, bucket{le: le, count: c})
	}
	sort.Slice(sc.buckets, func(i, j int) bool { return sc.buckets[i].le < sc.buckets[j].le })
	sort.Slice(sc.breakers, func(i, j int) bool {
		return sc.breakers[i].Peer+sc.breakers[i].Instance < sc.breakers[j].Peer+sc.breakers[j].Instance
	})
	return sc, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// metrics returns the dashboard's view of instance id, from the difference of its last two scrapes.
func (s *scraper) metrics(id string) InstanceMetrics {
	s.mu.Lock()
	defer s.mu.Unlock()
	var im InstanceMetrics
	im.ScrapeErr = s.errs[id]
	pair := s.last[id]
	cur, prev := pair[1], pair[0]
	if cur == nil {
		return im
	}
	im.ScrapedAgo = math.Round(time.Since(cur.at).Seconds()*10) / 10
	im.RSSMB = math.Round(cur.rss/(1<<20)*10) / 10
	im.Goroutines = cur.gor
	im.Breakers = cur.breakers
	im.Peers = cur.peers
	im.Limited, im.Shed = cur.limited, cur.shed
	if prev == nil {
		return im
	}
	dt := cur.at.Sub(prev.at).Seconds()
	dn := cur.requests - prev.requests
	if dt <= 0 || dn < 0 { // a restarted counter: wait for the next pair
		return im
	}
	im.RPS = math.Round(dn/dt*10) / 10
	if dn > 0 {
		im.ErrorRate = math.Round((cur.errors-prev.errors)/dn*10000) / 10000
		im.P99Ms = bucketQuantile(0.99, cur.buckets, prev.buckets) * 1000
	}
	return im
}

// bucketQuantile estimates a quantile from the difference of two cumulative bucket lists, with
// linear interpolation inside the bucket as Prometheus' histogram_quantile does.
func bucketQuantile(q float64, cur, prev []bucket) float64 {
	delta := make([]bucket, len(cur))
	for i, b := range cur {
		delta[i] = b
		for _, p := range prev {
			if p.le == b.le {
				delta[i].count -= p.count
			}
		}
	}
	if len(delta) == 0 {
		return 0
	}
	total := delta[len(delta)-1].count
	if total <= 0 {
		return 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range delta {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				return lower
			}
			if b.count == below {
				return b.le
			}
			return lower + (b.le-lower)*(rank-below)/(b.count-below)
		}
		lower, below = b.le, b.count
	}
	return lower
}

// serverError reports whether a server duration series counts failures of the server's own: an
// HTTP 5xx, or a gRPC code the server itself counts as one (grpcx.ServerError: INTERNAL,
// UNAVAILABLE, ...).
func serverError(name string, m *dto.Metric) bool {
	if name == promRPCDuration {
		code, err := strconv.Atoi(label(m, labelGRPCStatus))
		return err == nil && grpcx.ServerError(codes.Code(code))
	}
	code, _ := strconv.Atoi(label(m, labelStatus))
	return code >= 500
}
