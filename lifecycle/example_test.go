package lifecycle_test

import (
	"context"
	"fmt"
	"time"

	"github.com/cloudchassis/kit/lifecycle"
)

func Example() {
	g := lifecycle.New(lifecycle.WithStopTimeout(10 * time.Second))
	for _, name := range []string{"database", "cache", "server"} {
		g.Append(lifecycle.Hook{
			Name:  name,
			Start: func(context.Context) error { fmt.Println("start", name); return nil },
			Stop:  func(context.Context) error { fmt.Println("stop", name); return nil },
		})
	}
	// In a main function, use lifecycle.WithSignals() and context.Background(): Run then returns
	// after SIGINT or SIGTERM.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	fmt.Println("err:", g.Run(ctx))
	// Output:
	// start database
	// start cache
	// start server
	// stop server
	// stop cache
	// stop database
	// err: <nil>
}
