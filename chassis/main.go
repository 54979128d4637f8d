package chassis

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/resilience"
)

// Exit codes used by Exit and Main.
const (
	ExitOK     = 0
	ExitError  = 1
	ExitConfig = 2 // a bad or missing environment variable, or a bad flag
)

// Exit ends the process for err: 0 for nil, ExitConfig for configuration problems (printed one per
// line to standard error), ExitError otherwise. Call it from main only.
func Exit(err error) {
	os.Exit(report(os.Stderr, err))
}

func report(w io.Writer, err error) int {
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(w, err)
	var ce *config.Error
	if errors.As(err, &ce) {
		fmt.Fprintln(w, "Run with -help to list every variable.")
		return ExitConfig
	}
	return ExitError
}

// Main is a whole main function: it answers -help with the environment reference of the chassis
// settings and the WithConfig structs, builds the Service, lets setup register its routes and hooks,
// runs it, and exits with the right code (see Exit).
//
//	func main() {
//		var cfg Config
//		chassis.Main("hello", func(svc *chassis.Service) error {
//			svc.HandleFunc("GET /hello", hello)
//			return nil
//		}, chassis.WithConfig(&cfg))
//	}
func Main(name string, setup func(*Service) error, opts ...Option) {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr, name, setup, opts...))
}

func runMain(args []string, stdout, stderr io.Writer, name string, setup func(*Service) error, opts ...Option) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage of %s: configured by environment variables.\n\n", name)
		fs.PrintDefaults()
		fmt.Fprintln(stderr)
		_ = WriteEnvReference(stderr, opts...)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitConfig
	}
	svc, err := New(name, opts...)
	if err != nil {
		return report(stderr, err)
	}
	if *version {
		svc.release(context.Background())
		fmt.Fprintln(stdout, svc.Name(), svc.Settings().Version)
		return ExitOK
	}
	if setup != nil {
		if err := setup(svc); err != nil {
			svc.release(context.Background()) // flushes what setup logged before failing
			return report(stderr, fmt.Errorf("setup: %w", err))
		}
	}
	return report(stderr, svc.Run(context.Background()))
}

// EnvReference describes every environment variable a service reads: the chassis settings first,
// then the WithConfig structs given in opts.
func EnvReference(opts ...Option) ([]config.Var, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	vars, err := config.Reference(&Settings{})
	if err != nil {
		return nil, err
	}
	// Every dependency of Client reads the same variables under its own prefix.
	deps, err := config.Reference(&resilience.Config{}, config.WithStrictPrefix("CLIENT_<NAME>"))
	if err != nil {
		return nil, err
	}
	vars = append(vars, deps...)
	conns, err := config.Reference(&TransportConfig{}, config.WithStrictPrefix("CLIENT_<NAME>"))
	if err != nil {
		return nil, err
	}
	for i, v := range conns {
		// A dependency's TLS settings default to the shared CLIENT_TLS_* ones, not to the tags.
		if rest, ok := strings.CutPrefix(v.Name, "CLIENT_<NAME>_TLS_"); ok {
			conns[i].Default, conns[i].HasDefault = "", false
			conns[i].Description = "overrides CLIENT_TLS_" + rest + " for this dependency"
		}
	}
	vars = append(vars, conns...)
	for _, spec := range o.userConfig {
		v, err := config.Reference(spec)
		if err != nil {
			return nil, err
		}
		vars = append(vars, v...)
	}
	return vars, nil
}

// WriteEnvReference prints EnvReference as an aligned table.
func WriteEnvReference(w io.Writer, opts ...Option) error {
	vars, err := EnvReference(opts...)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "Environment variables:")
	return config.WriteUsage(w, vars)
}
