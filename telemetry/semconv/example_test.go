package semconv_test

import (
	"fmt"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

// A resilience package names its instruments and attributes from these constants, so dashboards
// built on docs/telemetry.md keep working.
func Example() {
	fmt.Println(semconv.MetricRetryAttempts, semconv.UnitAttempt, semconv.AttrRetryReason+"="+semconv.ReasonStatus5xx)
	// Output: chassis.client.retries {attempt} chassis.retry.reason=status_5xx
}
