package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// chassisModule is the module this CLI belongs to and generated services require.
const chassisModule = "github.com/cloudchassis/kit"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// errUsage marks errors that are the caller's: the command line was wrong (exit 2).
var errUsage = errors.New("usage")

// usageError is a command-line mistake; its message is printed with the command's usage.
type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == errUsage }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

const mainUsage = `chassis is the Chassis developer CLI.

Usage:
  chassis <command> [flags] [arguments]

Commands:
  new      generate a new service repository
  env      print the environment variables every Chassis service reads
  version  print the version of this CLI

Run "chassis <command> -h" for a command's flags.
`

// run is main without the process: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return exitUsage
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, mainUsage)
		return exitOK
	case "new":
		err = runNew(rest, stdout, stderr)
	case "env":
		err = runEnv(rest, stdout, stderr)
	case "version":
		err = runVersion(rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "chassis: unknown command %q\n\n%s", cmd, mainUsage)
		return exitUsage
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		if err.Error() != "" {
			fmt.Fprintf(stderr, "chassis %s: %v\n", args[0], err)
		}
		return exitUsage
	default:
		fmt.Fprintf(stderr, "chassis %s: %v\n", args[0], err)
		return exitFailure
	}
}

// newFlagSet returns a flag set whose parse errors become usage errors (printed once, by the flag
// package, with the usage).
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("chassis "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args; a bad flag is a usage error whose message the flag package already printed.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{}
	}
	return nil
}

func runEnv(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("env", `Usage: chassis env [-markdown]

Prints the environment variables every Chassis service reads, with their defaults. A service's own
variables come on top: run the service with -help to see all of them.`, stderr)
	markdown := fs.Bool("markdown", false, "print a Markdown table instead of aligned text")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	vars, err := chassis.EnvReference()
	if err != nil {
		return err
	}
	if *markdown {
		return config.WriteMarkdown(stdout, vars)
	}
	return config.WriteUsage(stdout, vars)
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "Usage: chassis version\n\nPrints the version of this CLI and of the Go toolchain that built it.", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	v, goVersion := "(unknown)", "(unknown)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		v, goVersion = moduleVersion(bi), bi.GoVersion
	}
	if v == "" {
		v = "(devel)"
	}
	fmt.Fprintf(stdout, "chassis %s %s\n", v, goVersion)
	return nil
}

// moduleVersion returns the version of chassisModule in the build, "" when it was built from a
// checkout.
func moduleVersion(bi *debug.BuildInfo) string {
	if bi.Main.Path == chassisModule {
		if bi.Main.Version == "(devel)" {
			return ""
		}
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == chassisModule {
			return d.Version
		}
	}
	return ""
}
