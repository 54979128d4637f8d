// Package consulapi holds what discovery/consul and coordination share about hashicorp/consul/api
// beyond the client itself.
package consulapi

import (
	"errors"
	"net/http"

	"github.com/hashicorp/consul/api"
)

// IsNotFound reports whether err is Consul's 404 (an unknown service, check or session), which the
// api package returns as a StatusError value or pointer depending on the call.
func IsNotFound(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code == http.StatusNotFound
	}
	var sep *api.StatusError
	return errors.As(err, &sep) && sep.Code == http.StatusNotFound
}
