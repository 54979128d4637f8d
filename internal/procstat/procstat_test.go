package procstat

import (
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOwnProcess(t *testing.T) {
	pid := os.Getpid()
	rss, err := RSS(pid)
	if err != nil || rss < 1<<20 {
		t.Errorf("RSS = %d, %v; want at least 1 MiB", rss, err)
	}
	before, err := FDs(pid)
	if err != nil || before < 3 {
		t.Fatalf("FDs = %d, %v", before, err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := FDs(pid)
	_ = f.Close()
	if after != before+1 {
		t.Errorf("FDs after opening a file = %d, want %d", after, before+1)
	}
	c0, err := CPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); { // burn CPU
	}
	if c1, _ := CPU(pid); c1 <= c0 {
		t.Errorf("CPU did not advance over 50 ms of work: %s → %s", c0, c1)
	}
}

func TestMissingProcess(t *testing.T) {
	const none = 1 << 30 // above any pid_max
	if _, err := RSS(none); err == nil {
		t.Error("RSS of a missing process: no error")
	}
	if _, err := FDs(none); err == nil {
		t.Error("FDs of a missing process: no error")
	}
	if _, err := CPU(none); err == nil {
		t.Error("CPU of a missing process: no error")
	}
}

func TestEstablished(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c, s)
	}
	// The listening socket and the clients' ends (other local ports) do not count.
	if n, err := Established(port); err != nil || n != 3 {
		t.Errorf("Established(%d) = %d, %v; want 3", port, n, err)
	}
}

func TestCountEstablished(t *testing.T) {
	// Port 8500 is 0x2134: two established, one listening, one client end, one other port.
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2134 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:2134 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:2134 0100007F:C351 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:C350 0100007F:2134 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:1F90 0100007F:C352 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0000000000000000 20 4 30 10 -1
`
	if n := countEstablished([]byte(table), 8500); n != 2 {
		t.Errorf("countEstablished = %d, want 2", n)
	}
}
