// Command strict is a test service with a required variable, for the exit-code test.
package main

import "github.com/cloudchassis/kit/chassis"

type config struct {
	DatabaseURL string `envconfig:"DATABASE_URL" required:"true" desc:"database connection URL"`
}

func main() {
	var cfg config
	chassis.Main("strict", nil, chassis.WithConfig(&cfg))
}
