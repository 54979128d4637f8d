package discoverytest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server serves a fake Consul on a loopback TCP address, for tests that need a real socket and for
// programs (the demo launcher) that embed it as their registry. Pause and Resume simulate an agent
// outage: connections are refused and open ones (blocked queries) are cut, while the state survives.
//
// A Server is safe for concurrent use. Close stops it for good.
type Server struct {
	*Consul

	mu     sync.Mutex
	addr   string
	srv    *http.Server
	done   chan struct{}
	closed bool
}

// NewServer returns a Server around a new, empty Consul. Nothing listens before Start.
func NewServer() *Server { return &Server{Consul: NewConsul()} }

// Start listens on addr ("127.0.0.1:0" picks a free port; see Addr) and serves in a goroutine that
// Close (or Pause) stops.
func (s *Server) Start(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("discoverytest: server closed")
	}
	if s.srv != nil {
		return errors.New("discoverytest: server already started")
	}
	return s.listen(addr)
}

// listen binds and serves. s.mu must be held.
func (s *Server) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("discoverytest: listen: %w", err)
	}
	s.addr = ln.Addr().String()
	s.srv = &http.Server{Handler: s.Consul, ReadHeaderTimeout: 10 * time.Second}
	s.done = make(chan struct{})
	go func(srv *http.Server, done chan struct{}) {
		defer close(done)
		_ = srv.Serve(ln) // returns http.ErrServerClosed on Close
	}(s.srv, s.done)
	return nil
}

// Addr returns the "host:port" the server listens (or listened, while paused) on.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// URL returns "http://" + Addr().
func (s *Server) URL() string { return "http://" + s.Addr() }

// Pause closes the listener and every open connection: clients get "connection refused", and blocked
// queries end with a broken connection, as when an agent dies. The registry state is kept.
func (s *Server) Pause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopHTTP()
}

// stopHTTP closes the HTTP server and waits for its Serve to return. s.mu must be held.
func (s *Server) stopHTTP() error {
	if s.srv == nil {
		return nil
	}
	err := s.srv.Close()
	<-s.done
	s.srv = nil
	return err
}

// Resume listens again on the same address after Pause.
func (s *Server) Resume() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("discoverytest: server closed")
	}
	if s.srv != nil {
		return nil
	}
	// The port was just released; another process could take it, but on loopback in tests that is
	// rare enough that failing loudly is the right answer.
	return s.listen(s.addr)
}

// Close stops serving, the health checks and the session timers. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	// Release blocked handlers first, so closing the HTTP server does not wait for their wait times.
	cerr := s.Consul.Close()
	s.mu.Lock()
	herr := s.stopHTTP()
	s.mu.Unlock()
	return errors.Join(cerr, herr)
}
