package consulapi

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestIsNotFound(t *testing.T) {
	for err, want := range map[error]bool{
		api.StatusError{Code: 404}:                         true,
		fmt.Errorf("x: %w", &api.StatusError{Code: 404}):   true,
		api.StatusError{Code: 500}:                         false,
		errors.New("Unexpected response code: 404 (nope)"): false,
	} {
		if got := IsNotFound(err); got != want {
			t.Errorf("IsNotFound(%v) = %v", err, got)
		}
	}
}
