package chassistest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/chassistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, chassistest.LeakOptions()...) }
