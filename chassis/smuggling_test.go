package chassis_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudchassis/kit/chassis"
)

// TestSmugglingRefused sends the classic request-smuggling shapes over a raw connection to a default
// service. The ambiguous ones must be refused with 400 (or 501 for an unknown coding) before the
// handler runs, and the connection closed so that it carries no second request.
func TestSmugglingRefused(t *testing.T) {
	svc, err := chassis.New("svc", chassis.WithEnv(env()))
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int64
	svc.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
	})
	start(t, svc)

	const smuggled = "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
	refused := map[string]string{
		"two Content-Lengths": "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n" + smuggled,
		"TE obfuscated":       "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + smuggled,
		"TE chunked, identity": "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" +
			smuggled,
		"two TE fields":           "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"space before colon":      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"negative Content-Length": "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n" + smuggled,
	}
	for name, raw := range refused {
		t.Run(name, func(t *testing.T) {
			before := served.Load()
			conn, br := send(t, svc.Addr(), raw)
			defer conn.Close()
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusBadRequest && res.StatusCode != http.StatusNotImplemented {
				t.Fatalf("status %d, want 400 or 501", res.StatusCode)
			}
			// The connection is closed after the refusal: nothing answers the smuggled request.
			if second, err := http.ReadResponse(br, nil); err == nil {
				second.Body.Close()
				t.Fatalf("a second response (%d) came on the same connection", second.StatusCode)
			}
			if n := served.Load() - before; n != 0 {
				t.Fatalf("the handler ran %d times", n)
			}
		})
	}

	// Shapes net/http accepts, in a way RFC 9112 allows: they are not refused, and the test pins how
	// they are framed, so that a change in net/http shows here (docs/protection.md, "Threat model").
	t.Run("CL.TE is framed by Transfer-Encoding alone", func(t *testing.T) {
		// RFC 9112 §6.1: Transfer-Encoding overrides Content-Length. A front proxy that framed this by
		// Content-Length (40) would see one request; net/http sees the empty chunked body and then the
		// GET as the next request on the connection. Mainstream proxies refuse or normalise CL+TE.
		before := served.Load()
		conn, br := send(t, svc.Addr(), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+smuggled)
		defer conn.Close()
		for _, want := range []int{http.StatusOK, http.StatusNotFound} {
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != want {
				t.Fatalf("status %d, want %d", res.StatusCode, want)
			}
		}
		if n := served.Load() - before; n != 1 {
			t.Fatalf("the handler ran %d times, want 1", n)
		}
	})
	t.Run("obs-fold is folded into the previous field", func(t *testing.T) {
		// RFC 9112 §5.2 lets a server replace obs-fold with a space: the folded line never becomes a
		// Transfer-Encoding, so the body is framed by the Content-Length of 0.
		conn, br := send(t, svc.Addr(), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nX-A: a\r\n Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
		defer conn.Close()
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status %d", res.StatusCode)
		}
	})
	t.Run("Transfer-Encoding on HTTP/1.0 is ignored and the connection closed", func(t *testing.T) {
		conn, br := send(t, svc.Addr(), "POST /echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+smuggled)
		defer conn.Close()
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if second, err := http.ReadResponse(br, nil); err == nil {
			second.Body.Close()
			t.Fatalf("a second response (%d) came on an HTTP/1.0 connection", second.StatusCode)
		}
	})
}

func send(t *testing.T, addr, raw string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	return conn, bufio.NewReader(conn)
}
