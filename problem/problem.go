package problem

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// ContentType is the media type of a problem details document (RFC 9457 §3).
const ContentType = "application/problem+json"

// Details is an RFC 9457 problem details object. Field names follow the RFC; Errors is the
// extension member the RFC's own example uses for validation problems.
//
// A Details is a plain value: it is safe to share once built, and it is also an error, so a
// handler can return one and let its caller write it.
type Details struct {
	// Type is a URI reference that identifies the problem type. Empty means "about:blank", in which
	// case Title should be the HTTP status phrase.
	Type string `json:"type,omitempty"`
	// Title is a short, human-readable summary of the problem type that does not change from
	// occurrence to occurrence.
	Title string `json:"title,omitempty"`
	// Status is the HTTP status code of this occurrence.
	Status int `json:"status,omitempty"`
	// Detail explains this occurrence and helps the client correct it.
	Detail string `json:"detail,omitempty"`
	// Instance is a URI reference that identifies this occurrence (for example the request path or a
	// request id URN).
	Instance string `json:"instance,omitempty"`
	// Errors lists problems with individual fields of the request, in the order they were found.
	Errors []FieldError `json:"errors,omitempty"`
}

// FieldError is one problem with one field of a request document.
type FieldError struct {
	// Pointer is an RFC 6901 JSON Pointer to the field in the request document, built from the
	// document's own (JSON) names: "/items/0/sku", never the Go field names.
	Pointer string `json:"pointer"`
	// Detail says what is wrong with the field and what would be accepted.
	Detail string `json:"detail"`
	// Rule is the machine-readable name of the rule that failed (for example "required", "max").
	Rule string `json:"rule,omitempty"`
}

// New returns the Details for status with the given title and detail. An empty title becomes the
// status phrase (http.StatusText); several detail strings are joined with "; ".
func New(status int, title string, detail ...string) *Details {
	status = normalize(status)
	if title == "" {
		title = http.StatusText(status)
	}
	return &Details{Title: title, Status: status, Detail: strings.Join(detail, "; ")}
}

// Write writes a problem details response with the given status, title and detail. An empty title
// becomes the status phrase; several detail strings are joined with "; ". It is the helper for
// code that has nothing more to say than a status and a sentence.
func Write(w http.ResponseWriter, status int, title string, detail ...string) {
	New(status, title, detail...).Write(w)
}

// Write sends d as the response: Content-Type application/problem+json, X-Content-Type-Options
// nosniff, Cache-Control no-store (an error describes one occurrence and must not be cached), and
// the status code d.Status (500 when it is not a valid code). Headers the caller set before, such
// as Retry-After or WWW-Authenticate, are kept.
func (d *Details) Write(w http.ResponseWriter) {
	status := normalize(d.Status)
	out := *d
	out.Status = status
	if out.Title == "" && (out.Type == "" || out.Type == "about:blank") {
		out.Title = http.StatusText(status)
	}
	// Marshalling strings, ints and slices of them cannot fail; invalid UTF-8 is replaced.
	body, _ := json.Marshal(&out)
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Del("ETag")
	h.Del("Last-Modified")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Error reports the problem as "STATUS TITLE: DETAIL", so that Details can travel as an error.
func (d *Details) Error() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(d.Status))
	if d.Title != "" {
		b.WriteByte(' ')
		b.WriteString(d.Title)
	}
	if d.Detail != "" {
		b.WriteString(": ")
		b.WriteString(d.Detail)
	}
	for i, fe := range d.Errors {
		if i == 0 && d.Detail == "" {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(fe.Pointer)
		b.WriteByte(' ')
		b.WriteString(fe.Detail)
	}
	return b.String()
}

func normalize(status int) int {
	if status < 100 || status > 999 {
		return http.StatusInternalServerError
	}
	return status
}
