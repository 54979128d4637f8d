package problem_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/problem"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func decode(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if got := rec.Header().Get("Content-Type"); got != problem.ContentType {
		t.Fatalf("Content-Type = %q, want %q", got, problem.ContentType)
	}
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, rec.Body)
	}
	return m
}

func TestWrite(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		title      string
		detail     []string
		wantStatus int
		wantTitle  string
		wantDetail any
	}{
		{"default title", 413, "", []string{"body exceeds 1 MiB"}, 413, "Request Entity Too Large", "body exceeds 1 MiB"},
		{"custom title", 429, "slow down", nil, 429, "slow down", nil},
		{"joined detail", 400, "", []string{"a", "b"}, 400, "Bad Request", "a; b"},
		{"invalid status", 42, "", nil, 500, "Internal Server Error", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			rec.Header().Set("Retry-After", "3")
			rec.Header().Set("ETag", `"x"`)
			problem.Write(rec, tt.status, tt.title, tt.detail...)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			m := decode(t, rec)
			if m["title"] != tt.wantTitle || m["status"] != float64(tt.wantStatus) || m["detail"] != tt.wantDetail {
				t.Fatalf("body = %v", m)
			}
			if _, ok := m["type"]; ok {
				t.Fatalf("type must be omitted (about:blank), body = %v", m)
			}
			if rec.Header().Get("Retry-After") != "3" {
				t.Fatal("headers set before Write were dropped")
			}
			if rec.Header().Get("ETag") != "" || rec.Header().Get("Cache-Control") != "no-store" {
				t.Fatalf("cache headers = %v", rec.Header())
			}
			if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Fatal("nosniff missing")
			}
		})
	}
}

func TestDetailsWriteFieldErrors(t *testing.T) {
	d := &problem.Details{
		Type:     "https://example.com/probs/validation",
		Title:    "invalid request",
		Status:   http.StatusUnprocessableEntity,
		Instance: "/orders",
		Errors: []problem.FieldError{
			{Pointer: "/items/0/sku", Detail: "is required", Rule: "required"},
		},
	}
	rec := httptest.NewRecorder()
	d.Write(rec)
	m := decode(t, rec)
	errs, ok := m["errors"].([]any)
	if !ok || len(errs) != 1 {
		t.Fatalf("errors = %v", m["errors"])
	}
	fe := errs[0].(map[string]any)
	if fe["pointer"] != "/items/0/sku" || fe["detail"] != "is required" || fe["rule"] != "required" {
		t.Fatalf("field error = %v", fe)
	}
	if m["type"] != d.Type || m["instance"] != "/orders" {
		t.Fatalf("body = %v", m)
	}
	if got, want := d.Error(), "422 invalid request: /items/0/sku is required"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

func Example() {
	rec := httptest.NewRecorder()
	problem.Write(rec, http.StatusTooManyRequests, "", "limit of 10 requests per second exceeded")
	os.Stdout.Write(rec.Body.Bytes())
	// Output:
	// {"title":"Too Many Requests","status":429,"detail":"limit of 10 requests per second exceeded"}
}
