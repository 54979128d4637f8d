// Command contender is one candidate of the integration tests: it campaigns for a key and, while it
// leads, writes to a storage server with its fencing token as fast as the server answers. It prints
// one line per event on stdout: "elected <id> <token>", "fenced <id> <token>" (the storage refused
// the token), "revoked <id> <token> <cause>". SIGTERM makes it step down and exit.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/coordination/election"
	"github.com/cloudchassis/kit/coordination/lock"
)

func main() {
	consul := flag.String("consul", "127.0.0.1:8500", "Consul HTTP address")
	key := flag.String("key", "test/leader", "election key")
	id := flag.String("id", "", "candidate ID")
	storage := flag.String("storage", "", "storage URL")
	ttl := flag.Duration("ttl", 10*time.Second, "session TTL")
	delay := flag.Duration("lock-delay", time.Second, "lock-delay")
	flag.Parse()
	if err := run(*consul, *key, *id, *storage, *ttl, *delay); err != nil {
		fmt.Fprintln(os.Stderr, "contender:", err)
		os.Exit(1)
	}
}

var out sync.Mutex

func say(format string, args ...any) {
	out.Lock()
	defer out.Unlock()
	fmt.Printf(format+"\n", args...)
}

func run(addr, key, id, storage string, ttl, delay time.Duration) error {
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = addr
	client, err := api.NewClient(cfg)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	write := func(token string) {
		u := storage + "/write?" + url.Values{"token": {token}, "id": {id}}.Encode()
		resp, err := hc.Post(u, "text/plain", nil)
		if err != nil {
			return
		}
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusConflict {
			say("fenced %s %s", id, token)
		}
	}
	// A process paused in the middle of a write (GC pause, stopped VM) completes that write when it
	// resumes, before it can learn that its lock is gone: on SIGCONT, write once more with the token
	// it held. The storage must refuse it.
	var held atomic.Value // string
	cont := make(chan os.Signal, 1)
	signal.Notify(cont, syscall.SIGCONT)
	go func() {
		for range cont {
			if tok, ok := held.Load().(string); ok {
				write(tok)
			}
		}
	}()
	e, err := election.New(lock.NewConsulClient(client), key, id,
		election.WithLockOptions(lock.WithTTL(ttl), lock.WithLockDelay(delay), lock.WithRetryWait(100*time.Millisecond)),
		election.WithOnElected(func(ctx context.Context, token lock.Token) {
			say("elected %s %d", id, token)
			held.Store(token.String())
			for ctx.Err() == nil {
				write(token.String())
				time.Sleep(5 * time.Millisecond)
			}
		}),
		election.WithOnRevoked(func(token lock.Token, cause error) {
			say("revoked %s %d %v", id, token, cause)
		}))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := e.Start(ctx); err != nil {
		return err
	}
	say("started %s", id)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return e.Stop(sctx)
}
