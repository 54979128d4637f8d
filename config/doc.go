// Package config loads twelve-factor configuration from the environment into a typed struct.
//
// Start with Load:
//
//	type Config struct {
//		Port     int           `envconfig:"PORT" default:"8080" validate:"min=0,max=65535" desc:"public HTTP port"`
//		Timeout  time.Duration `envconfig:"TIMEOUT" default:"5s" desc:"upstream timeout"`
//		Password config.Secret `envconfig:"DB_PASSWORD" required:"true" desc:"database password"`
//	}
//	var cfg Config
//	err := config.Load(&cfg)
//
// The tag vocabulary is github.com/kelseyhightower/envconfig's (envconfig, default, required, desc,
// split_words, ignored), and types implementing envconfig.Decoder or envconfig.Setter decode as they do
// there. On top of envconfig, Load:
//
//   - reports every problem at once: a *Error lists each variable, the offending value (redacted when
//     secret) and what was expected, instead of stopping at the first;
//   - validates with `validate` tags (go-playground/validator syntax) and an optional Validate() error
//     method on the struct or any nested struct;
//   - reads NAME_FILE when NAME is unset, for secrets mounted as files;
//   - reads from an injectable Lookup, so several services can load different environments in one
//     process (tests) without touching os.Environ.
//
// Reference describes every variable (name, type, default, required, description) for -help output
// and generated docs; Dump lists current values with secrets redacted and the source of each value.
package config
