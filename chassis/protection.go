package chassis

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/guard"
	"github.com/cloudchassis/kit/health"
	"github.com/cloudchassis/kit/lifecycle"
)

// setupProtection builds the shedder, the rate limiter, the token verifier and the TLS reloader from
// the settings. Each is nil when its settings turn it off, and the middleware skips it. Errors of
// the verifier and the reloader (an unreadable AUTH_JWKS_FILE or TLS file, a key file without a
// usable key) are configuration errors: exit code 2.
//
// Readiness checks: "auth.jwks" fails until a key set with a usable key has loaded from
// AUTH_JWKS_URL, and then passes for good, since the keys loaded last keep being served while the
// issuer is unreachable (failing then would take every instance out of service at once for an
// outage of the issuer alone); "auth.jwks.refresh" (non-critical: the probe reports it as degraded
// but passes) reports the last failed fetch, and "tls.reload" (non-critical) a failed certificate
// rotation.
func (s *Service) setupProtection() error {
	gopts := []guard.Option{guard.WithMeterProvider(s.tel.MeterProvider()), guard.WithLogger(s.tel.Slog())}
	var errs []error
	var err error
	if s.shedder, err = s.settings.ShedConfig.NewShedder(gopts...); err != nil {
		errs = append(errs, err)
	}
	if s.bodies, err = s.settings.bodyGate(gopts...); err != nil {
		errs = append(errs, err)
	}
	if s.limiter, err = s.settings.RateLimitConfig.NewLimiter(auth.Subject, gopts...); err != nil {
		errs = append(errs, err)
	}
	if s.settings.AuthEnabled() {
		v, jwks, err := s.settings.Config.New(auth.WithMeterProvider(s.tel.MeterProvider()), auth.WithLogger(s.tel.Slog()))
		if err != nil {
			errs = append(errs, configError("authentication", err))
		} else {
			s.verifier, s.jwks = v, jwks
		}
		if jwks != nil {
			s.health.Add(health.Readiness, health.Check{Name: "auth.jwks", Func: jwks.Ready})
			s.health.Add(health.Readiness, health.Check{Name: "auth.jwks.refresh", NonCritical: true,
				Func: func(context.Context) error { return jwks.Err() }})
		}
	}
	if s.settings.TLSConfig.Enabled() {
		r, err := auth.NewReloader(s.settings.TLSConfig)
		if err != nil {
			errs = append(errs, configError("TLS", err))
		} else {
			s.tlsConf = r
			s.health.Add(health.Readiness, health.Check{Name: "tls.reload", NonCritical: true,
				Func: func(context.Context) error { return r.Err() }})
		}
	}
	return errors.Join(errs...)
}

// configError makes err a *config.Error, keeping the variable a *config.Problem names.
func configError(what string, err error) error {
	var ce *config.Error
	if errors.As(err, &ce) {
		return err
	}
	var p *config.Problem
	if errors.As(err, &p) {
		return &config.Error{Problems: []config.Problem{*p}}
	}
	return &config.Error{Problems: []config.Problem{{Err: fmt.Errorf("%s: %w", what, err)}}}
}

// jwksHook refreshes the key set in the background while the service runs, and ends a fetch still
// running when the service stops.
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
			if cancel == nil {
				return nil
			}
			cancel()
			wg.Wait()
			return s.jwks.Close()
		},
	}
}
