package config_test

import (
	"fmt"
	"os"
	"time"

	"github.com/cloudchassis/kit/config"
)

func Example() {
	type Config struct {
		Port     int           `envconfig:"PORT" default:"8080" validate:"min=0,max=65535" desc:"public HTTP port"`
		Timeout  time.Duration `envconfig:"TIMEOUT" default:"5s" desc:"upstream timeout"`
		Password config.Secret `envconfig:"DB_PASSWORD" required:"true" desc:"database password"`
	}
	env := config.MapLookup(map[string]string{"PORT": "80a", "TIMEOUT": "10"})

	var cfg Config
	err := config.Load(&cfg, config.WithLookup(env))
	fmt.Println(err)

	vars, _ := config.Reference(&cfg)
	_ = config.WriteUsage(os.Stdout, vars)
	// Output:
	// config: 3 problems:
	//   PORT="80a": not an integer; want integer: public HTTP port
	//   TIMEOUT="10": not a duration (use a number with a unit: 250ms, 30s, 5m); want duration: upstream timeout
	//   DB_PASSWORD: required, not set; want secret string: database password
	//   PORT         public HTTP port (integer, default 8080)
	//   TIMEOUT      upstream timeout (duration, default 5s)
	//   DB_PASSWORD  database password (secret string, required, secret; or DB_PASSWORD_FILE)
}
