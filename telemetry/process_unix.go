//go:build unix

package telemetry

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

func readProcStats() procStats {
	st := procStats{fds: -1}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		st.cpuOK = true
		st.userCPU = float64(ru.Utime.Sec) + float64(ru.Utime.Usec)/1e6
		st.systemCPU = float64(ru.Stime.Sec) + float64(ru.Stime.Usec)/1e6
	}
	// Resident set size and descriptors come from /proc where it exists (Linux); elsewhere they
	// are simply not reported.
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			if pages, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				st.rss = pages * int64(os.Getpagesize())
			}
		}
	}
	if d, err := os.Open("/proc/self/fd"); err == nil {
		names, err := d.Readdirnames(-1)
		_ = d.Close()
		if err == nil {
			st.fds = int64(len(names)) - 1 // minus the descriptor reading the directory
		}
	}
	return st
}
