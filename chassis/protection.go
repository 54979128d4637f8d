package chassis

import (
	"context"
	"fmt"
	"sync"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/guard"
	"github.com/cloudchassis/kit/lifecycle"
)

// setupProtection builds the shedder, the rate limiter, the token verifier and the TLS reloader from
// the settings. Each is nil when its settings turn it off, and the middleware skips it.
func (s *Service) setupProtection() error {
	gopts := []guard.Option{guard.WithMeterProvider(s.tel.MeterProvider()), guard.WithLogger(s.tel.Slog())}
	s.shedder = s.settings.ShedConfig.NewShedder(gopts...)
	s.bodies = s.settings.bodyGate(gopts...)
	s.limiter = s.settings.RateLimitConfig.NewLimiter(auth.Subject, gopts...)
	if s.settings.AuthEnabled() {
		v, jwks, err := s.settings.Config.New()
		if err != nil {
			return fmt.Errorf("chassis: authentication: %w", err)
		}
		s.verifier, s.jwks = v, jwks
	}
	if s.settings.TLSConfig.Enabled() {
		r, err := auth.NewReloader(s.settings.TLSConfig)
		if err != nil {
			return fmt.Errorf("chassis: TLS: %w", err)
		}
		s.tlsConf = r
	}
	return nil
}

// jwksHook refreshes the key set in the background while the service runs.
func (s *Service) jwksHook() lifecycle.Hook {
	var (
		cancel context.CancelFunc
		wg     sync.WaitGroup
	)
	return lifecycle.Hook{
		Name: "jwks refresh",
		Start: func(context.Context) error {
			if s.jwks == nil {
				return nil
			}
			ctx, c := context.WithCancel(context.Background())
			cancel = c
			wg.Go(func() { _ = s.jwks.Run(ctx) })
			return nil
		},
		Stop: func(context.Context) error {
			if cancel != nil {
				cancel()
				wg.Wait()
			}
			return nil
		},
	}
}
