// Command deps is a test service with its own settings and one dependency, for the exit tests.
package main

import "github.com/cloudchassis/kit/chassis"

type config struct {
	Greeting string `envconfig:"GREETING" default:"hello" validate:"oneof=hello hi" desc:"word used to greet"`
	Workers  int    `envconfig:"WORKERS" default:"1" validate:"min=1" desc:"worker goroutines"`
}

func main() {
	var cfg config
	chassis.Main("deps", func(svc *chassis.Service) error {
		svc.Client("pricing")
		return nil
	}, chassis.WithConfig(&cfg))
}
