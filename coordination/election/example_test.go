package election_test

import (
	"context"
	"fmt"
	"time"

	"github.com/cloudchassis/kit/coordination/coordinationtest"
	"github.com/cloudchassis/kit/coordination/election"
	"github.com/cloudchassis/kit/coordination/lock"
)

// Two instances campaign; the first leads until it drains, then the second takes over.
// coordinationtest stands in for Consul (use lock.NewConsulClient(client)).
func Example() {
	consul := coordinationtest.New()
	ctx := context.Background()
	elected := make(chan string, 2)
	newCandidate := func(id string) *election.Election {
		e, err := election.New(consul, "service/catalog/leader", id,
			election.WithLockOptions(lock.WithTTL(10*time.Second)),
			election.WithOnElected(func(ctx context.Context, token lock.Token) {
				elected <- id
				<-ctx.Done() // lead until revoked
			}))
		if err != nil {
			panic(err)
		}
		return e
	}
	a, b := newCandidate("catalog-1"), newCandidate("catalog-2")
	_ = a.Start(ctx)
	fmt.Println("elected:", <-elected)
	_ = b.Start(ctx)
	defer b.Stop(ctx)

	leader, _ := b.Leader(ctx)
	fmt.Println("b sees leader:", leader.Value)

	_ = a.Stop(ctx) // draining: step down cleanly
	fmt.Println("elected:", <-elected)
	// Output:
	// elected: catalog-1
	// b sees leader: catalog-1
	// elected: catalog-2
}
