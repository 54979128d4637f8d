package guard_test

import (
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/guard"
	"github.com/cloudchassis/kit/internal/obs/obstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestInstrumentErrorsReturned(t *testing.T) {
	refuse := guard.WithMeterProvider(obstest.Refusing{})
	_, err1 := guard.NewShedder(guard.DefaultShedConfig(), refuse)
	_, err2 := guard.NewLimiter(guard.Rate{PerSecond: 1}, refuse)
	_, err3 := guard.NewBodyGate(guard.BodyConfig{}, refuse)
	for i, err := range []error{err1, err2, err3} {
		if !errors.Is(err, obstest.ErrRefused) {
			t.Errorf("constructor %d: %v", i, err)
		}
	}
}
