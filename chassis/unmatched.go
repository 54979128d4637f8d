package chassis

import (
	"net/http"

	"github.com/cloudchassis/kit/problem"
)

// problemAnswer turns the ServeMux's plain-text error answers (404, and 405 with Allow) into
// problem+json with the same status and headers, so that every error the public server gives has one
// format. Answers below 400 pass through. It is used on the catch-all route only (handleUnmatched).
type problemAnswer struct {
	http.ResponseWriter
	replaced bool // the text body that follows WriteHeader is dropped
}

func (p *problemAnswer) WriteHeader(code int) {
	if code < 400 || p.replaced {
		p.ResponseWriter.WriteHeader(code)
		return
	}
	p.replaced = true
	detail := "no route matches the request's path"
	if code == http.StatusMethodNotAllowed {
		detail = "the path does not accept this method; the Allow header lists those it accepts"
	}
	problem.Write(p.ResponseWriter, code, "", detail)
}

func (p *problemAnswer) Write(b []byte) (int, error) {
	if p.replaced {
		return len(b), nil
	}
	return p.ResponseWriter.Write(b)
}

func (p *problemAnswer) Unwrap() http.ResponseWriter { return p.ResponseWriter }
