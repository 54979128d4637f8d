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
//   - reads NAME_FILE when NAME is unset, for secrets mounted as files: regular files only (not
//     /dev/zero, a FIFO or a directory), at most MaxFileSize bytes, within FileReadTimeout
//     (ReadFileBounded, which other packages may use for their own files); a problem with such a
//     value names NAME_FILE and the path, never the file's content;
//   - decodes numbers strictly: integers are decimal (0x50, 0o17, 8_080 and the octal-looking 010
//     are refused, not read in another base) and overflow is an error; floats are finite and
//     decimal (NaN, Inf and hexadecimal floats are refused, and so is 1e-400, which would round to 0);
//   - runs Validate methods even when other variables failed, so that their range checks are reported
//     in the same error, and puts the prefix on the names in their plain errors (a struct loaded
//     WithStrictPrefix("CLIENT_PRICING") that says "RETRIES=-1: must be 0 or more" is reported as
//     CLIENT_PRICING_RETRIES);
//   - folds a value to lower case before decoding and validating it when the field has
//     `lower:"true"`, for case-insensitive words (LOG_LEVEL=DEBUG reads as debug);
//   - reads from an injectable Lookup, so several services can load different environments in one
//     process (tests) without touching os.Environ.
//
// Reference describes every variable (name, type, default, required, description) for -help output
// (WriteUsage, grouped under Var.Group and wrapped to a width) and generated docs (WriteMarkdown); Dump lists current values with secrets redacted and the source of each value.
package config
