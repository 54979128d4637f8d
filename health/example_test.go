package health_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/cloudchassis/kit/health"
)

func Example() {
	c := health.New()
	c.Add(health.Readiness, health.Check{Name: "database", Func: func(ctx context.Context) error { return nil }})
	c.Add(health.Readiness, health.Check{
		Name:        "recommendations",
		Func:        func(ctx context.Context) error { return errors.New("connection refused") },
		NonCritical: true, // the service still answers without it
	})
	mux := http.NewServeMux()
	c.Register(mux)

	probe := func() {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		fmt.Println(rec.Code, c.Check(context.Background(), health.Readiness).Status)
	}
	probe() // start-up has not finished
	c.MarkStarted()
	probe()
	c.MarkDraining() // SIGTERM: stop getting traffic, keep serving what arrives
	probe()
	// Output:
	// 503 starting
	// 200 degraded
	// 503 draining
}
