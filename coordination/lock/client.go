package lock

import (
	"context"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/internal/consulapi"
)

// Client is the part of the Consul API a Lock uses: sessions and the session-aware KV operations.
// *ConsulClient implements it over github.com/hashicorp/consul/api; coordinationtest.Consul is an
// in-memory fake.
type Client interface {
	// CreateSession creates a session and returns its ID.
	CreateSession(ctx context.Context, se *api.SessionEntry) (string, error)
	// RenewSession resets a session's TTL. A nil entry with a nil error means the session no longer
	// exists (Consul answers 404): it was invalidated.
	RenewSession(ctx context.Context, id string) (*api.SessionEntry, error)
	// DestroySession invalidates a session. An unknown session is not an error.
	DestroySession(ctx context.Context, id string) error
	// Acquire sets p.Key to p.Value held by p.Session if no other session holds it and no lock-delay
	// applies, and reports whether it did.
	Acquire(ctx context.Context, p *api.KVPair) (bool, error)
	// Release clears the holder of p.Key if it is p.Session, writing p.Value, and reports whether it did.
	Release(ctx context.Context, p *api.KVPair) (bool, error)
	// Get reads one key (nil when it does not exist); q.WaitIndex makes it a blocking query.
	Get(ctx context.Context, key string, q *api.QueryOptions) (*api.KVPair, *api.QueryMeta, error)
}

// ConsulClient adapts a *api.Client to Client. It is safe for concurrent use.
type ConsulClient struct {
	c *api.Client
}

var _ Client = (*ConsulClient)(nil)

// NewConsulClient wraps c.
func NewConsulClient(c *api.Client) *ConsulClient { return &ConsulClient{c: c} }

// CreateSession implements Client.
func (c *ConsulClient) CreateSession(ctx context.Context, se *api.SessionEntry) (string, error) {
	id, _, err := c.c.Session().Create(se, (&api.WriteOptions{}).WithContext(ctx))
	return id, err
}

// RenewSession implements Client.
func (c *ConsulClient) RenewSession(ctx context.Context, id string) (*api.SessionEntry, error) {
	se, _, err := c.c.Session().Renew(id, (&api.WriteOptions{}).WithContext(ctx))
	return se, err
}

// DestroySession implements Client.
func (c *ConsulClient) DestroySession(ctx context.Context, id string) error {
	_, err := c.c.Session().Destroy(id, (&api.WriteOptions{}).WithContext(ctx))
	if consulapi.IsNotFound(err) {
		return nil
	}
	return err
}

// Acquire implements Client.
func (c *ConsulClient) Acquire(ctx context.Context, p *api.KVPair) (bool, error) {
	ok, _, err := c.c.KV().Acquire(p, (&api.WriteOptions{}).WithContext(ctx))
	return ok, err
}

// Release implements Client.
func (c *ConsulClient) Release(ctx context.Context, p *api.KVPair) (bool, error) {
	ok, _, err := c.c.KV().Release(p, (&api.WriteOptions{}).WithContext(ctx))
	return ok, err
}

// Get implements Client.
func (c *ConsulClient) Get(ctx context.Context, key string, q *api.QueryOptions) (*api.KVPair, *api.QueryMeta, error) {
	if q == nil {
		q = &api.QueryOptions{}
	}
	return c.c.KV().Get(key, q.WithContext(ctx))
}
