package consul

import (
	"context"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/internal/consulapi"
)

// Agent is the part of the Consul agent API a Registrar uses. *Client implements it over
// github.com/hashicorp/consul/api; tests pass a fake.
type Agent interface {
	// Register adds or replaces a service (and its check) on the local agent.
	Register(ctx context.Context, reg *api.AgentServiceRegistration) error
	// Deregister removes a service from the local agent. Removing an unknown ID is not an error.
	Deregister(ctx context.Context, serviceID string) error
	// Registered reports whether the local agent currently knows the service ID.
	Registered(ctx context.Context, serviceID string) (bool, error)
	// UpdateTTL sets a TTL check's status ("passing", "warning" or "critical").
	UpdateTTL(ctx context.Context, checkID, output, status string) error
}

// Health is the part of the Consul API a Registry uses: the health endpoint of a service, which
// supports blocking queries through q.WaitIndex and q.WaitTime.
type Health interface {
	Service(ctx context.Context, service string, tags []string, passingOnly bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error)
}

// Client adapts a *api.Client to Agent and Health. It is safe for concurrent use.
type Client struct {
	c *api.Client
}

var (
	_ Agent  = (*Client)(nil)
	_ Health = (*Client)(nil)
)

// NewClient wraps c.
func NewClient(c *api.Client) *Client { return &Client{c: c} }

// Register implements Agent.
func (c *Client) Register(ctx context.Context, reg *api.AgentServiceRegistration) error {
	return c.c.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx))
}

// Deregister implements Agent. A 404 (the agent does not know the service) counts as success.
func (c *Client) Deregister(ctx context.Context, serviceID string) error {
	err := c.c.Agent().ServiceDeregisterOpts(serviceID, (&api.QueryOptions{}).WithContext(ctx))
	if consulapi.IsNotFound(err) {
		return nil
	}
	return err
}

// Registered implements Agent.
func (c *Client) Registered(ctx context.Context, serviceID string) (bool, error) {
	_, _, err := c.c.Agent().Service(serviceID, (&api.QueryOptions{}).WithContext(ctx))
	switch {
	case err == nil:
		return true, nil
	case consulapi.IsNotFound(err):
		return false, nil
	default:
		return false, err
	}
}

// UpdateTTL implements Agent.
func (c *Client) UpdateTTL(ctx context.Context, checkID, output, status string) error {
	return c.c.Agent().UpdateTTLOpts(checkID, output, status, (&api.QueryOptions{}).WithContext(ctx))
}

// Service implements Health.
func (c *Client) Service(ctx context.Context, service string, tags []string, passingOnly bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	return c.c.Health().ServiceMultipleTags(service, tags, passingOnly, q.WithContext(ctx))
}
