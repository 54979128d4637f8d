package chassis_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudchassis/kit/chassis"
)

// TestSlowBodyAttack reproduces the slow-body attack on loopback: 15 connections send a JSON body
// at 1 byte/s (and reconnect when cut off) while a legitimate client posts JSON. Waiting on the
// attackers' bytes must not take the shedder's slots: at least 99% of the legitimate requests
// succeed, with the default settings and with a shedder whose limit has settled at 10 (the limit
// that the attack exhausted before bodies were read ahead of admission), and the attackers are cut
// off with 408 at the minimum body rate, long before the 30 s read timeout.
func TestSlowBodyAttack(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 7 s attack over loopback")
	}
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"defaults", nil},
		{"limit settled at 10", []string{"SHED_INITIAL_LIMIT", "10", "SHED_MIN_LIMIT", "10", "SHED_MAX_LIMIT", "10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, err := chassis.New("svc", chassis.WithEnv(env(append([]string{"ACCESS_LOG", "false"}, tc.env...)...)))
			if err != nil {
				t.Fatal(err)
			}
			svc.HandleFunc("POST /items", func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if err != nil || !strings.HasPrefix(string(b), "{") {
					http.Error(w, "bad body", http.StatusBadRequest)
					return
				}
				time.Sleep(5 * time.Millisecond) // some work
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"ok":true}`)
			})
			start(t, svc)
			addr := svc.Addr()
			const attack = 7 * time.Second
			ctx, cancel := context.WithTimeout(context.Background(), attack)
			defer cancel()

			var (
				wg       sync.WaitGroup
				cutOff   atomic.Int64 // attackers' requests answered 408
				attempts atomic.Int64
			)
			for range 15 {
				wg.Go(func() {
					for ctx.Err() == nil {
						attempts.Add(1)
						if slowPost(ctx, addr) == http.StatusRequestTimeout {
							cutOff.Add(1)
						}
					}
				})
			}
			time.Sleep(500 * time.Millisecond) // the attackers are in

			client := &http.Client{Timeout: 5 * time.Second}
			defer client.CloseIdleConnections()
			var sent, ok int
			var firstErr string
			tick := time.NewTicker(20 * time.Millisecond)
			for n := 0; n < 400 && ctx.Err() == nil; n++ {
				<-tick.C
				sent++
				res, err := client.Post("http://"+addr+"/items", "application/json", strings.NewReader(`{"sku":"a-1","qty":2}`))
				if err != nil {
					if firstErr == "" {
						firstErr = err.Error()
					}
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					ok++
				} else if firstErr == "" {
					firstErr = res.Status
				}
			}
			tick.Stop()
			cancel()
			wg.Wait()

			t.Logf("legitimate: %d of %d succeeded (first failure: %q); attackers: %d requests, %d cut off with 408",
				ok, sent, firstErr, attempts.Load(), cutOff.Load())
			if sent < 100 {
				t.Fatalf("only %d legitimate requests sent", sent)
			}
			if float64(ok) < 0.99*float64(sent) {
				t.Errorf("%d of %d legitimate requests succeeded during the attack, want ≥ 99%%", ok, sent)
			}
			if cutOff.Load() < 15 {
				t.Errorf("%d attacking requests cut off with 408 within %v, want all 15 (minimum body rate after the 5 s grace)", cutOff.Load(), attack)
			}
		})
	}
}

// slowPost sends a POST declaring a 1000-byte JSON body and then sends it at 1 byte/s, until the
// server answers or ctx ends; it returns the status (0 when there was none).
func slowPost(ctx context.Context, addr string) int {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0
	}
	defer c.Close()
	status := make(chan int, 1)
	go func() {
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			status <- 0
			return
		}
		res.Body.Close()
		status <- res.StatusCode
	}()
	if _, err := fmt.Fprintf(c, "POST /items HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", addr); err != nil {
		return 0
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case st := <-status:
			return st
		case <-ctx.Done():
			c.Close()
			<-status
			return 0
		case <-tick.C:
			if _, err := c.Write([]byte(" ")); err != nil {
				c.Close()
				return <-status
			}
		}
	}
}
