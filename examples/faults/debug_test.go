package faults_test

import (
	"testing"
	"time"
)

func logSlow(t *testing.T, rs []result, over time.Duration) {
	if len(rs) == 0 {
		return
	}
	t0 := rs[0].start
	n := 0
	for _, r := range rs {
		if r.lat > over {
			n++
			if n <= 10 {
				t.Logf("slow call at +%v took %v err=%v", r.start.Sub(t0).Round(time.Millisecond), r.lat.Round(time.Millisecond), r.err)
			}
		}
	}
	t.Logf("%d calls over %v", n, over)
}
