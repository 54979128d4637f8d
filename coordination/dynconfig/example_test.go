package dynconfig_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/coordination/coordinationtest"
	"github.com/cloudchassis/kit/coordination/dynconfig"
)

// A rate limit changed in Consul KV takes effect without a restart; an invalid value is rejected
// and the old one stays. coordinationtest stands in for Consul (use dynconfig.NewConsulKV(client)).
func Example() {
	type Limits struct {
		Port      int     `envconfig:"PORT" default:"8080"`
		RateLimit float64 `envconfig:"RATE_LIMIT" default:"100" validate:"gt=0" reload:"true"`
	}
	consul := coordinationtest.New()
	env := config.MapLookup(map[string]string{"RATE_LIMIT": "50"})

	cfg, err := dynconfig.New[Limits](consul, "config/catalog", dynconfig.WithLookup(env))
	if err != nil {
		panic(err)
	}
	limiter := rate.NewLimiter(rate.Limit(cfg.Load().RateLimit), 1)
	changed := make(chan struct{}, 1)
	defer cfg.Subscribe(func(c dynconfig.Change[Limits]) {
		limiter.SetLimit(rate.Limit(c.New.Value.RateLimit))
		fmt.Println("changed:", c.Changed)
		changed <- struct{}{}
	})()

	ctx := context.Background()
	if err := cfg.Start(ctx); err != nil {
		panic(err)
	}
	defer cfg.Stop(ctx)
	fmt.Println("limit:", limiter.Limit())

	consul.Put("config/catalog/RATE_LIMIT", "200")
	<-changed
	fmt.Println("limit:", limiter.Limit())

	consul.Put("config/catalog/RATE_LIMIT", "-5")
	var rejected *dynconfig.RejectedError
	for !errors.As(cfg.Err(), &rejected) {
		time.Sleep(10 * time.Millisecond) // the watch applies changes in its own goroutine
	}
	fmt.Println("limit:", cfg.Load().RateLimit)
	fmt.Println("rejected:", rejected.Err)
	// Output:
	// limit: 50
	// changed: [RATE_LIMIT]
	// limit: 200
	// limit: 200
	// rejected: config: RATE_LIMIT="-5": must be greater than 0; want number
}
