package eofbody

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// Release runs once, at EOF or Close, whichever is first; bare bodies release at once.
func TestReleaseOnce(t *testing.T) {
	for _, closeFirst := range []bool{false, true} {
		n := 0
		resp := &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("abc"))}
		After(resp, Func(func() { n++ }))
		if n != 0 {
			t.Fatal("released before the body was read")
		}
		if !closeFirst {
			if b, _ := io.ReadAll(resp.Body); string(b) != "abc" {
				t.Fatalf("read %q", b)
			}
		}
		resp.Body.Close()
		resp.Body.Close()
		if n != 1 {
			t.Fatalf("closeFirst=%v: released %d times, want 1", closeFirst, n)
		}
	}
	n := 0
	After(&http.Response{StatusCode: 200, Body: http.NoBody}, Func(func() { n++ }))
	After(&http.Response{StatusCode: http.StatusSwitchingProtocols, Body: io.NopCloser(strings.NewReader(""))}, Func(func() { n++ }))
	After(nil, Func(func() { n++ }))
	if n != 3 {
		t.Fatalf("bare bodies released %d times, want 3", n)
	}
}
