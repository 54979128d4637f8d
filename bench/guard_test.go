package bench

import (
	"strconv"
	"testing"

	"github.com/failsafe-go/failsafe-go/adaptivelimiter"
	"github.com/go-kratos/aegis/ratelimit"
	"github.com/go-kratos/aegis/ratelimit/bbr"
	"github.com/zeromicro/go-zero/core/load"
	"golang.org/x/time/rate"

	"github.com/cloudchassis/kit/guard"
)

// Fast paths of server guards: a request that is admitted, measured from the admission call to the
// completion call. Run: cd bench && go test -run '^$' -bench Guard -benchmem -count 6

// Shedders / concurrency limiters.

func BenchmarkGuardShedder(b *testing.B) {
	s := must(guard.NewShedder(guard.DefaultShedConfig()))
	b.ReportAllocs()
	for b.Loop() {
		t, ok := s.TryAcquire(guard.PriorityDefault)
		if !ok {
			b.Fatal("refused")
		}
		t.Done()
	}
}

func BenchmarkGuardShedderParallel(b *testing.B) {
	cfg := guard.DefaultShedConfig()
	cfg.InitialLimit, cfg.MinLimit = 1000, 1000
	s := must(guard.NewShedder(cfg))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if t, ok := s.TryAcquire(guard.PriorityDefault); ok {
				t.Done()
			}
		}
	})
}

func BenchmarkGuardKratosBBR(b *testing.B) {
	l := bbr.NewLimiter()
	b.ReportAllocs()
	for b.Loop() {
		done, err := l.Allow()
		if err != nil {
			b.Fatal(err)
		}
		done(ratelimit.DoneInfo{})
	}
}

func BenchmarkGuardKratosBBRParallel(b *testing.B) {
	l := bbr.NewLimiter()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if done, err := l.Allow(); err == nil {
				done(ratelimit.DoneInfo{})
			}
		}
	})
}

func BenchmarkGuardGoZeroShedder(b *testing.B) {
	s := load.NewAdaptiveShedder()
	b.ReportAllocs()
	for b.Loop() {
		p, err := s.Allow()
		if err != nil {
			b.Fatal(err)
		}
		p.Pass()
	}
}

func BenchmarkGuardGoZeroShedderParallel(b *testing.B) {
	s := load.NewAdaptiveShedder()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if p, err := s.Allow(); err == nil {
				p.Pass()
			}
		}
	})
}

func BenchmarkGuardFailsafeAdaptiveLimiter(b *testing.B) {
	l := adaptivelimiter.NewBuilder[any]().WithLimits(1, 1000, 1000).Build()
	b.ReportAllocs()
	for b.Loop() {
		p, ok := l.TryAcquirePermit()
		if !ok {
			b.Fatal("refused")
		}
		p.Record()
	}
}

func BenchmarkGuardFailsafeAdaptiveLimiterParallel(b *testing.B) {
	l := adaptivelimiter.NewBuilder[any]().WithLimits(1, 1000, 1000).Build()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if p, ok := l.TryAcquirePermit(); ok {
				p.Record()
			}
		}
	})
}

// Rate limiters: an allowed request of a known caller.

func BenchmarkGuardLimiter(b *testing.B) {
	l := must(guard.NewLimiter(guard.Rate{PerSecond: 1e9, Burst: 1e6}))
	b.ReportAllocs()
	for b.Loop() {
		if !l.Allow("", "203.0.113.7").Allowed {
			b.Fatal("refused")
		}
	}
}

func BenchmarkGuardLimiterParallel(b *testing.B) {
	l := must(guard.NewLimiter(guard.Rate{PerSecond: 1e9, Burst: 1e6}))
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "203.0.113." + strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow("", keys[i&1023])
			i++
		}
	})
}

// x/time/rate on one bucket, with no per-caller lookup at all (what our Limiter's keyed Allow is
// measured against).
func BenchmarkGuardXTimeRate(b *testing.B) {
	l := rate.NewLimiter(rate.Limit(1e9), 1e6)
	b.ReportAllocs()
	for b.Loop() {
		if !l.Allow() {
			b.Fatal("refused")
		}
	}
}

func BenchmarkGuardXTimeRateParallel(b *testing.B) {
	l := rate.NewLimiter(rate.Limit(1e9), 1e6)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Allow()
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
