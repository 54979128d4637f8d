package resilience

import (
	"bytes"
	"context"
	"io"
	"net/http"
)

// prepareBody makes req's body replayable when it can: bodies with GetBody (set by http.NewRequest
// for bytes, strings and buffers) already are; others are read into memory up to limit bytes. A
// larger body is stitched back together (the part read, then the rest) and the request is sent once.
// It reports whether the returned request can be replayed.
func prepareBody(req *http.Request, limit int64) (*http.Request, bool, error) {
	if req.Body == nil || req.Body == http.NoBody || req.GetBody != nil {
		return req, true, nil
	}
	buf, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
	if err != nil {
		req.Body.Close()
		return nil, false, err
	}
	r := req.Clone(req.Context())
	if int64(len(buf)) > limit {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), req.Body), req.Body}
		return r, false, nil
	}
	req.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(buf))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	r.ContentLength = int64(len(buf))
	return r, true, nil
}

// attemptRequest returns req for another attempt under ctx, with a fresh body.
func attemptRequest(ctx context.Context, req *http.Request, fresh bool) (*http.Request, error) {
	r := req.WithContext(ctx)
	if fresh && req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
		b, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		r.Body = b
	}
	return r, nil
}

// drainLimit bounds how much of a discarded response is read so the connection can be reused.
const drainLimit = 4 << 10

// discard drains (a little) and closes the body of a response nobody will read.
func discard(resp *http.Response) {
	if resp == nil || resp.Body == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, resp.Body, drainLimit)
	resp.Body.Close()
}
