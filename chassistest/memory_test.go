package chassistest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudchassis/kit/chassistest"
)

func TestHandlerTransportRequestAndResponse(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen", strings.Join([]string{r.Method, r.Host, r.RequestURI, r.URL.Path, r.URL.RawQuery,
			r.Header.Get("X-Caller"), string(body), r.RemoteAddr, r.Proto}, "|"))
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "done")
	})
	c := &http.Client{Transport: chassistest.HandlerTransport(h)}
	req, _ := http.NewRequest(http.MethodPost, "http://svc/a%20b/c?q=1", strings.NewReader("payload"))
	req.Header.Set("X-Caller", "test")
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	want := "POST|svc|/a%20b/c?q=1|/a b/c|q=1|test|payload|127.0.0.1:1|HTTP/1.1"
	if got := res.Header.Get("X-Seen"); got != want {
		t.Errorf("server saw %q\nwant          %q", got, want)
	}
	if res.StatusCode != 201 || string(body) != "done" || res.ContentLength != 4 {
		t.Errorf("response %d %q length %d", res.StatusCode, body, res.ContentLength)
	}
}

func TestHandlerTransportNoBodyStatuses(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/empty" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		_, _ = io.WriteString(w, "hello")
	})
	c := &http.Client{Transport: chassistest.HandlerTransport(h)}
	res, err := c.Head("http://svc/x")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(res.Body); len(b) != 0 || res.StatusCode != 200 {
		t.Errorf("HEAD: %d %q", res.StatusCode, b)
	}
	res.Body.Close()
	res, err = c.Get("http://svc/empty")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(res.Body); len(b) != 0 || res.StatusCode != 204 {
		t.Errorf("204: %d %q", res.StatusCode, b)
	}
	res.Body.Close()
}

// A handler that flushes streams: the client gets the headers and the first part before the handler
// has finished, and the handler sees the client leave.
func TestHandlerTransportStreamsAndCancels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		left := make(chan error, 1)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "first\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			left <- r.Context().Err()
		})
		c := &http.Client{Transport: chassistest.HandlerTransport(h)}
		res, err := c.Get("http://svc/stream")
		if err != nil {
			t.Fatal(err)
		}
		if res.ContentLength != -1 {
			t.Errorf("streamed response has length %d", res.ContentLength)
		}
		buf := make([]byte, 6)
		if _, err := io.ReadFull(res.Body, buf); err != nil || string(buf) != "first\n" {
			t.Fatalf("read %q %v", buf, err)
		}
		res.Body.Close() // like closing the connection
		if err := <-left; !errors.Is(err, context.Canceled) {
			t.Errorf("handler saw %v", err)
		}
	})
}

func TestHandlerTransportClientDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		c := &http.Client{Transport: chassistest.HandlerTransport(h), Timeout: 3 * time.Second}
		start := time.Now()
		_, err := c.Get("http://svc/hang")
		if err == nil || time.Since(start) != 3*time.Second {
			t.Fatalf("err %v after %v", err, time.Since(start))
		}
		synctest.Wait() // the handler saw the cancellation and returned
	})
}

func TestHandlerTransportPanics(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/late" {
			_, _ = io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
		}
		panic("boom")
	})
	c := &http.Client{Transport: chassistest.HandlerTransport(h)}
	if _, err := c.Get("http://svc/early"); !errors.Is(err, chassistest.ErrHandlerPanicked) || !strings.Contains(err.Error(), "boom") {
		t.Errorf("early panic: %v", err)
	}
	res, err := c.Get("http://svc/late")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(res.Body)
	res.Body.Close()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("late panic: body error %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestHandlerTransportLargeBodyCommitsEarly(t *testing.T) {
	big := strings.Repeat("x", 10000)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, big) })
	res, err := (&http.Client{Transport: chassistest.HandlerTransport(h)}).Get("http://svc/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || string(b) != big {
		t.Fatalf("read %d bytes, %v", len(b), err)
	}
}
