package chassis

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
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
// line to standard error) and for ErrUnknownTask, the code of an error with an ExitCode() int method
// in its chain when it is in 1-125 (a task's own code), ExitError otherwise. Call it from main only.
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
	if errors.Is(err, ErrUnknownTask) {
		return ExitConfig
	}
	// A task's own code (an *exec.ExitError of a command it ran, say), when it is one a shell
	// reads as an exit status rather than a signal.
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		if c := ec.ExitCode(); c > 0 && c < 126 {
			return c
		}
	}
	return ExitError
}

// Main is a whole main function: it answers -help with the environment reference (the service's own
// WithConfig variables first, then the chassis settings by group), builds the Service, lets setup
// register its routes and hooks, runs it, and exits with the right code (see Exit). A service is
// configured by its environment, so a bad flag exits with ExitConfig; so does a positional argument,
// unless setup registered tasks (Service.Task): then `NAME TASK [ARGS...]` runs that task with
// Service.RunTask instead of serving, and exits with its code; an unknown task exits with
// ExitConfig and the list of tasks. -help lists the tasks too: it builds the service and runs setup
// to learn them (as Run would, so setup should register things, not start them).
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
	fs.Usage = func() {} // -help is answered below, on standard output; a bad flag gets one line
	short := func() {
		fmt.Fprintf(stderr, "Usage: %s [-version]. It is configured by environment variables: run %s -help to list them.\n", name, name)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			tasks, terr := helpTasks(name, setup, opts)
			if err := writeHelp(stdout, name, tasks, terr, opts...); err != nil {
				fmt.Fprintln(stderr, err)
				return ExitError
			}
			return ExitOK
		}
		short() // the flag package printed what was wrong
		return ExitConfig
	}
	if *version && fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q after -version.\n", name, fs.Args())
		short()
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
	if fs.NArg() == 0 {
		return report(stderr, svc.Run(context.Background()))
	}
	tasks := svc.Tasks()
	if !slices.ContainsFunc(tasks, func(t TaskInfo) bool { return t.Name == fs.Arg(0) }) {
		svc.release(context.Background())
		if len(tasks) == 0 {
			fmt.Fprintf(stderr, "%s: unexpected arguments %q: a service takes no arguments.\n", name, fs.Args())
			short()
			return ExitConfig
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%s: unknown task %q.\n", name, fs.Arg(0))
		writeTasks(&b, name, tasks)
		io.WriteString(stderr, b.String())
		return ExitConfig
	}
	return report(stderr, svc.RunTask(context.Background(), fs.Arg(0), fs.Args()[1:]))
}

// helpTasks builds the service quietly and runs setup to learn its tasks for -help. The error says
// why it could not (an environment with problems: -help does not need a valid one).
func helpTasks(name string, setup func(*Service) error, opts []Option) ([]TaskInfo, error) {
	if setup == nil {
		return nil, nil
	}
	svc, err := New(name, append(slices.Clip(opts), WithLogOutput(io.Discard), WithoutSignals())...)
	if err != nil {
		return nil, err
	}
	defer svc.release(context.Background())
	if err := setup(svc); err != nil {
		return nil, err
	}
	return svc.Tasks(), nil
}

// writeHelp answers -help: the flags, the tasks, then the environment reference wrapped to the
// terminal's width (COLUMNS, read through WithEnv's lookup; DefaultUsageWidth when unset).
// tasks and taskErr are what helpTasks found.
func writeHelp(w io.Writer, name string, tasks []TaskInfo, taskErr error, opts ...Option) error {
	o := options{lookup: os.LookupEnv}
	for _, opt := range opts {
		opt.apply(&o)
	}
	width := config.DefaultUsageWidth
	if v, ok := o.lookup("COLUMNS"); ok {
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
			width = n
		}
	}
	vars, err := EnvReference(opts...)
	if err != nil {
		return err
	}
	var b strings.Builder
	if len(tasks) > 0 {
		fmt.Fprintf(&b, "Usage: %s [-version]\n       %s TASK [ARGS...]\n\n", name, name)
	} else {
		fmt.Fprintf(&b, "Usage: %s [-version]\n\n", name)
	}
	b.WriteString(config.Wrap(name+" is configured by environment variables, listed below: its own first, then the "+
		"chassis settings by group. A variable NAME can also be read from a file: NAME_FILE=path. "+
		"OpenTelemetry reads the standard OTEL_* variables (docs/telemetry.md).", width))
	b.WriteString("\n")
	b.WriteString("Flags:\n  -help     print this help and exit\n  -version  print the version and exit\n\n")
	writeTasks(&b, name, tasks)
	if taskErr != nil {
		b.WriteString(config.Wrap("Tasks: not listed, because the service cannot be set up with this environment ("+
			strings.SplitN(taskErr.Error(), "\n", 2)[0]+"); run "+name+" without -help to see every problem.", width))
		b.WriteString("\n\n")
	}
	if err := config.WriteUsageWidth(&b, vars, width); err != nil {
		return err
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// Groups of the environment reference, in the order -help shows them.
const (
	GroupService    = "This service"
	groupServer     = "Chassis: server"
	groupHTTP       = "Chassis: HTTP limits"
	groupDiscovery  = "Chassis: discovery and registration"
	groupShed       = "Chassis: load shedding"
	groupRateLimit  = "Chassis: rate limiting"
	groupAuth       = "Chassis: bearer-token authentication"
	groupTLS        = "Chassis: TLS of the servers"
	groupGRPC       = "Chassis: gRPC server"
	groupClientTLS  = "Chassis: clients: TLS shared by every dependency"
	groupLogging    = "Chassis: logging"
	groupAdmin      = "Chassis: admin port"
	groupDependency = "Chassis: clients, per dependency (CLIENT_<NAME>_*)"
	groupOther      = "Chassis: other"
)

// settingGroup returns the -help group of a chassis variable.
func settingGroup(name string) string {
	has := func(prefixes ...string) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(name, p) {
				return true
			}
		}
		return false
	}
	switch {
	case has("CLIENT_<NAME>_"):
		return groupDependency
	case has("CLIENT_TLS_"):
		return groupClientTLS
	case has("HTTP_"):
		return groupHTTP
	case has("DISCOVERY", "CONSUL_", "ETCD_", "ETCDCTL_") || name == "REGISTER" || name == "ADVERTISE_ADDRESS" ||
		name == "SERVICE_TAGS" || name == "SERVICE_META" || name == "LB_POLICY":
		return groupDiscovery
	case has("SERVICE_", "HOST", "PORT", "ADMIN_PORT", "START_", "SHUTDOWN_", "DRAIN_"):
		return groupServer
	case has("GRPC_"):
		return groupGRPC
	case has("SHED_"):
		return groupShed
	case has("RATE_LIMIT_", "TRUSTED_PROXIES"):
		return groupRateLimit
	case has("AUTH_"):
		return groupAuth
	case has("TLS_"):
		return groupTLS
	case has("LOG_", "ACCESS_LOG"):
		return groupLogging
	case has("ADMIN_"):
		return groupAdmin
	}
	return groupOther
}

// EnvReference describes every environment variable a service reads: the WithConfig structs given
// in opts first (Group GroupService), then the chassis settings, grouped (server, HTTP limits,
// discovery, protection, clients, logging, admin; Group names the group).
func EnvReference(opts ...Option) ([]config.Var, error) {
	var o options
	for _, opt := range opts {
		opt.apply(&o)
	}
	var own []config.Var
	for _, spec := range o.userConfig {
		v, err := config.Reference(spec)
		if err != nil {
			return nil, err
		}
		own = append(own, v...)
	}
	for i := range own {
		own[i].Group = GroupService
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
	grpcVars, err := config.Reference(&GRPCConfig{}, config.WithStrictPrefix("CLIENT_<NAME>"))
	if err != nil {
		return nil, err
	}
	vars = append(vars, grpcVars...)
	// Groups come in the order of their first variable; within a group, declaration order stays.
	rank := map[string]int{}
	for i := range vars {
		vars[i].Group = settingGroup(vars[i].Name)
		if _, ok := rank[vars[i].Group]; !ok {
			rank[vars[i].Group] = len(rank)
		}
	}
	slices.SortStableFunc(vars, func(a, b config.Var) int { return rank[a.Group] - rank[b.Group] })
	return append(own, vars...), nil
}

// WriteEnvReference prints EnvReference, grouped and wrapped to config.DefaultUsageWidth columns.
func WriteEnvReference(w io.Writer, opts ...Option) error {
	vars, err := EnvReference(opts...)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "Environment variables:")
	return config.WriteUsage(w, vars)
}
