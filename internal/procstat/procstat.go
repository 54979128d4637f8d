// Package procstat reads what a process holds from Linux's /proc: its resident memory, its open file
// descriptors, its CPU time, and the TCP connections established to a local port. The soak
// (examples/cluster -soak) and the capacity measurement (bench/capacity) sample other processes
// with it. On systems without /proc every function returns an error.
package procstat

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrNoField is returned when a /proc file lacks the field asked for.
var ErrNoField = errors.New("procstat: field not found")

// RSS returns the resident set size of process pid in bytes (VmRSS in /proc/<pid>/status).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("procstat: VmRSS of %d: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%w: VmRSS of %d", ErrNoField, pid)
}

// FDs returns how many file descriptors process pid has open (the entries of /proc/<pid>/fd).
func FDs(pid int) (int, error) {
	es, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, err
	}
	return len(es), nil
}

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ, 100 on every Linux
// architecture Go supports.
const clockTick = 10 * time.Millisecond

// CPU returns the user and system CPU time process pid has used (/proc/<pid>/stat), in steps of 10 ms.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	// The command name, in parentheses, may hold spaces: the fields start after the last ')'.
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0, fmt.Errorf("%w: stat of %d", ErrNoField, pid)
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: utime and stime of %d", ErrNoField, pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("procstat: stat of %d: %w", pid, err)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// Established returns how many TCP connections in state ESTABLISHED have the local port port (IPv4
// and IPv6, every network namespace's view being the caller's): for a server's port, the
// connections its clients hold open to it.
func Established(port int) (int, error) {
	n, read := 0, false
	var errs []error
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		read = true
		n += countEstablished(b, port)
	}
	if !read {
		return 0, errors.Join(errs...)
	}
	return n, nil
}

// countEstablished parses a /proc/net/tcp table: "sl local_address rem_address st ...", addresses as
// HEXIP:HEXPORT, state 01 is ESTABLISHED.
func countEstablished(table []byte, port int) int {
	want := fmt.Sprintf(":%04X", port)
	n := 0
	for i, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 4 {
			continue
		}
		if strings.HasSuffix(f[1], want) && f[3] == "01" {
			n++
		}
	}
	return n
}
