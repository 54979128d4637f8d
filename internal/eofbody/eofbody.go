// Package eofbody is the one response-body wrapper of the client chain that releases what a call
// holds (a balancer's in-flight slot, an attempt's timer and bulkhead permit, a hedge's context) once,
// when the caller has finished with the body: at EOF or at Close, whichever comes first.
package eofbody

import (
	"io"
	"net/http"
	"sync/atomic"
)

// A Releaser frees what a call holds. Embedding the Body in a struct that is the Releaser keeps the
// wrapper in the call's one allocation.
type Releaser interface{ Release() }

// Func adapts a function to a Releaser.
type Func func()

// Release calls f.
func (f Func) Release() { f() }

// Body passes reads and Close through and calls R.Release once, at EOF or at Close.
type Body struct {
	io.ReadCloser
	R    Releaser
	done atomic.Bool
}

func (b *Body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.release()
	}
	return n, err
}

func (b *Body) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

func (b *Body) release() {
	if b.done.CompareAndSwap(false, true) {
		b.R.Release()
	}
}

// Bare reports whether resp's body must not be wrapped: there is none, or it is the read-write body
// of a 101 Switching Protocols, which must not be hidden behind a read-only wrapper.
func Bare(resp *http.Response) bool {
	return resp.Body == nil || resp.Body == http.NoBody || resp.StatusCode == http.StatusSwitchingProtocols
}

// After arranges for r to be released when resp's body is finished, or at once when there is no
// body to wrap.
func After(resp *http.Response, r Releaser) {
	if resp == nil || Bare(resp) {
		r.Release()
		return
	}
	resp.Body = &Body{ReadCloser: resp.Body, R: r}
}
