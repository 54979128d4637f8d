package chassis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/consul"
	"github.com/cloudchassis/kit/resilience"
	"github.com/cloudchassis/kit/telemetry"
)

// WithEnviron lists the environment's variables, as os.Environ does ("KEY=value"; only the keys
// are used), for the checks that look for variables by prefix: New validates every
// CLIENT_<NAME>_* and DISCOVERY_STATIC_<NAME> variable present, and Run reports misspelt ones.
// Values are still read through the lookup of WithEnv. The default is os.Environ without WithEnv,
// and no variables with it (a lookup cannot be listed): give both to a service configured from a map.
func WithEnviron(environ func() []string) Option {
	return optionFunc(func(o *options) { o.environ, o.environSet = environ, true })
}

// clientSpec is a struct that every dependency reads under CLIENT_<NAME><sub>_.
type clientSpec struct {
	sub string     // "" for the resilience settings
	new func() any // a fresh spec holding the values the dependency starts from
}

// clientSpecs lists what a dependency reads from the environment. New validates each for every
// <NAME> found in the environment, and Run takes the variable names from it to tell a misspelt
// variable from a known one. A struct read per dependency belongs here.
func clientSpecs() []clientSpec {
	return []clientSpec{
		{new: func() any { c := resilience.DefaultConfig(); return &c }},
		{new: func() any { c := DefaultTransportConfig(); return &c }},
		{new: func() any { return &GRPCConfig{} }},
	}
}

// envScan is what New found by listing the environment, kept for Run's final check.
type envScan struct {
	names    []string            // every variable set (non-empty), sorted
	own      map[string]bool     // read by the chassis settings or a WithConfig struct
	suffixes []string            // known CLIENT_<NAME>_ suffixes, longest first
	clients  map[string][]string // NAME -> its CLIENT_<NAME>_* variables
	static   map[string]string   // NAME -> DISCOVERY_STATIC_<NAME>, in static discovery mode

	// Problems of the variables above, by NAME. Run reports those of names the service does not
	// declare; for declared ones, Client's own load (with the values set in code) is the authority.
	clientProblems map[string][]config.Problem
	staticProblems map[string][]config.Problem
}

// checkEnvironment validates every group of variables and returns one *config.Error listing all
// their problems: the chassis settings and WithConfig structs, OTEL_*, CONSUL_* (with consul
// discovery), and the CLIENT_<NAME>_* and DISCOVERY_STATIC_<NAME> variables present. Problems of the
// last two alone do not fail New: which dependencies exist is known only at Run (see runProblems).
func (s *Service) checkEnvironment() error {
	var all config.Error
	if err := s.loadConfig(&all); err != nil {
		return err
	}
	all.Problems = append(all.Problems, envProblems(telemetry.CheckEnv(s.opts.lookup))...)
	mode := s.discoveryMode()
	if mode == DiscoveryConsul {
		if _, err := consul.ConfigFromEnv(s.opts.lookup); err != nil {
			all.Problems = append(all.Problems, splitProblems(err)...)
		}
	}
	scan, err := s.scanEnvironment(mode == DiscoveryStatic)
	if err != nil {
		return err
	}
	s.scan = scan
	if len(all.Problems) == 0 {
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(scan.clients)) {
		all.Problems = append(all.Problems, scan.clientProblems[name]...)
	}
	for _, name := range slices.Sorted(maps.Keys(scan.static)) {
		all.Problems = append(all.Problems, scan.staticProblems[name]...)
	}
	return &all
}

// scanEnvironment finds the CLIENT_<NAME>_* and DISCOVERY_STATIC_<NAME> variables and validates them.
func (s *Service) scanEnvironment(static bool) (*envScan, error) {
	sc := &envScan{own: map[string]bool{}, clients: map[string][]string{}, static: map[string]string{},
		clientProblems: map[string][]config.Problem{}, staticProblems: map[string][]config.Problem{}}
	specs := append([]any{&Settings{}}, s.opts.userConfig...)
	for _, spec := range specs {
		vars, err := config.Reference(spec)
		if err != nil {
			return nil, fmt.Errorf("chassis: %w", err)
		}
		for _, v := range vars {
			sc.own[v.Name], sc.own[v.Name+"_FILE"] = true, true
		}
	}
	for _, cs := range clientSpecs() {
		vars, err := config.Reference(cs.new(), config.WithStrictPrefix("X"+cs.sub))
		if err != nil {
			return nil, fmt.Errorf("chassis: %w", err)
		}
		for _, v := range vars {
			sc.suffixes = append(sc.suffixes, strings.TrimPrefix(v.Name, "X_"))
		}
	}
	slices.SortFunc(sc.suffixes, func(a, b string) int { return cmp.Compare(len(b), len(a)) })

	for _, kv := range s.opts.environ() {
		k, _, _ := strings.Cut(kv, "=")
		if s.isSet(k) {
			sc.names = append(sc.names, k)
		}
	}
	slices.Sort(sc.names)
	sc.names = slices.Compact(sc.names)
	for _, k := range sc.names {
		if sc.own[k] {
			continue
		}
		if name, _, ok := sc.parseClient(k); ok {
			sc.clients[name] = append(sc.clients[name], k)
		}
		if name, ok := strings.CutPrefix(k, StaticPrefix); ok && static && name != "" {
			sc.static[name] = k
		}
	}
	for name := range sc.clients {
		for _, cs := range clientSpecs() {
			err := config.Load(cs.new(), config.WithStrictPrefix("CLIENT_"+name+cs.sub), config.WithoutDefaults(),
				config.WithLookup(s.opts.lookup))
			sc.clientProblems[name] = append(sc.clientProblems[name], splitProblems(err)...)
		}
	}
	for name, key := range sc.static {
		v, _ := s.opts.lookup(key)
		if _, err := discovery.ParseStatic(v); err != nil {
			sc.staticProblems[name] = []config.Problem{{Var: key, Value: v, HasValue: true, Err: err}}
		}
	}
	return sc, nil
}

// isSet reports whether k has a non-empty value through the service's lookup.
func (s *Service) isSet(k string) bool {
	v, ok := s.opts.lookup(k)
	return ok && v != ""
}

// parseClient splits CLIENT_<NAME>_<SUFFIX>[_FILE] at the longest known suffix.
func (sc *envScan) parseClient(k string) (name, suffix string, ok bool) {
	rest, ok := strings.CutPrefix(k, "CLIENT_")
	if !ok {
		return "", "", false
	}
	for _, r := range []string{rest, strings.TrimSuffix(rest, "_FILE")} {
		for _, sfx := range sc.suffixes {
			if n, ok := strings.CutSuffix(r, "_"+sfx); ok && n != "" {
				return n, sfx, true
			}
		}
	}
	return "", "", false
}

// runProblems is Run's final check, before anything starts: the problems of the dependencies
// declared with Client (once each, under their full names), the CLIENT_<NAME>_* and
// DISCOVERY_STATIC_<NAME> problems of undeclared names, and misspellings: a variable that would be a
// declared dependency's setting but for a small typo in the name or the setting, while the variable
// it resembles is unset (CLIENT_PRICNG_TIMEOUT when pricing is declared and CLIENT_PRICING_TIMEOUT
// is not set). Other variables with these prefixes that nothing reads are logged as a warning: a
// shared environment may well hold settings for other services. Caller holds s.mu.
func (s *Service) runProblems() error {
	problems := slices.Clone(s.clientErrs)
	sc := s.scan
	if sc == nil {
		return joinProblems(problems, s.clientFails)
	}
	declared := map[string]bool{}
	for svc := range s.deps {
		declared[strings.TrimPrefix(ClientPrefix(svc), "CLIENT_")] = true
	}
	for svc := range s.grpcDeps {
		declared[strings.TrimPrefix(ClientPrefix(svc), "CLIENT_")] = true
	}
	var unread []string
	for _, k := range sc.names {
		if sc.own[k] {
			continue
		}
		switch {
		case strings.HasPrefix(k, "CLIENT_"):
			p, ok := sc.checkClientVar(k, declared, s.isSet)
			if ok {
				problems = append(problems, p...)
			} else {
				unread = append(unread, k)
			}
		case strings.HasPrefix(k, StaticPrefix):
			name := strings.TrimPrefix(k, StaticPrefix)
			if _, static := sc.static[name]; !static || declared[name] {
				continue
			}
			if near := nearest(name, declared); near != "" && !s.isSet(StaticPrefix+near) {
				problems = append(problems, config.Problem{Var: k,
					Err: fmt.Errorf("unknown variable: no client %q is declared; did you mean %s%s?", name, StaticPrefix, near)})
				continue
			}
			problems = append(problems, sc.staticProblems[name]...)
			unread = append(unread, k)
		}
	}
	// A declared dependency's list may be bad while Client stopped at its CLIENT_<NAME>_* variables.
	for _, name := range slices.Sorted(maps.Keys(declared)) {
		problems = append(problems, sc.staticProblems[name]...)
	}
	// A task may declare its clients when it runs (RunTask), after this check: no warning then.
	if len(unread) > 0 && !s.inTask {
		s.log.Warn("environment variables not read: no declared client uses them (misspelt, or meant for another service)",
			zap.Strings("variables", unread))
	}
	return joinProblems(problems, s.clientFails)
}

// checkClientVar classifies a CLIENT_* variable: read (nil, true), a problem (problems, true), or
// unread (nil, false).
func (sc *envScan) checkClientVar(k string, declared map[string]bool, isSet func(string) bool) ([]config.Problem, bool) {
	name, sfx, parsed := sc.parseClient(k)
	if parsed && declared[name] {
		return nil, true
	}
	// Under a declared client's prefix, with an unknown setting: CLIENT_PRICING_TIMEOTU.
	var owner string
	for d := range declared {
		if strings.HasPrefix(k, "CLIENT_"+d+"_") && len(d) > len(owner) {
			owner = d
		}
	}
	if owner != "" {
		rest := strings.TrimPrefix(k, "CLIENT_"+owner+"_")
		file := ""
		if r, ok := strings.CutSuffix(rest, "_FILE"); ok {
			rest, file = r, "_FILE"
		}
		known := map[string]bool{}
		for _, s := range sc.suffixes {
			known[s] = true
		}
		if near := nearest(rest, known); near != "" && !isSet("CLIENT_"+owner+"_"+near) && !isSet("CLIENT_"+owner+"_"+near+"_FILE") {
			return []config.Problem{{Var: k, Err: fmt.Errorf("unknown variable: no setting %s; did you mean CLIENT_%s_%s%s?", rest, owner, near, file)}}, true
		}
		return nil, false
	}
	if !parsed {
		return nil, false
	}
	// A known setting of an undeclared name close to a declared one: CLIENT_PRICNG_TIMEOUT.
	if near := nearest(name, declared); near != "" && !isSet("CLIENT_"+near+"_"+sfx) && !isSet("CLIENT_"+near+"_"+sfx+"_FILE") {
		return []config.Problem{{Var: k, Err: fmt.Errorf("unknown variable: no client %q is declared; did you mean %s?",
			name, strings.Replace(k, "CLIENT_"+name+"_", "CLIENT_"+near+"_", 1))}}, true
	}
	if p := sc.clientProblems[name]; len(p) > 0 {
		// Bad values for a dependency this service does not call: still wrong, and reported once.
		delete(sc.clientProblems, name)
		return p, true
	}
	return nil, false
}

// nearest returns the candidate within a small edit distance of s (one edit for names of up to
// four letters, two beyond), the closest first, or "".
func nearest(s string, candidates map[string]bool) string {
	best, bestD := "", 0
	for c := range candidates {
		limit := 2
		if min(len(c), len(s)) <= 4 {
			limit = 1
		}
		d := editDistance(s, c)
		if d > 0 && d <= limit && (best == "" || d < bestD || d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal-string-alignment distance: insertions, deletions, substitutions and
// transpositions of adjacent characters each cost one.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// noResolver is the problem of a client declared with DISCOVERY=none and no WithResolver.
func noResolver(service string) error {
	return &config.Error{Problems: []config.Problem{{Var: "DISCOVERY", Value: DiscoveryNone, HasValue: true,
		Err: fmt.Errorf("client %q has no way to find instances: %w", service, ErrNoResolver)}}}
}

// probeResolver reports whether the resolver can serve service (DISCOVERY_STATIC_<SERVICE> set and
// well formed, say), releasing what it built. It lets a dependency with bad CLIENT_<NAME>_*
// variables report its discovery problems too.
func (s *Service) probeResolver(service string) error {
	if s.opts.resolver == nil {
		return noResolver(service)
	}
	_, release, err := s.opts.resolver(service)
	if release != nil {
		release()
	}
	return err
}

// partitionProblems separates the configuration problems in err (a *config.Error, possibly joined
// with others and wrapped) from the other errors.
func partitionProblems(err error) ([]config.Problem, []error) {
	if err == nil {
		return nil, nil
	}
	if ce, ok := err.(*config.Error); ok {
		return ce.Problems, nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var ps []config.Problem
		var rest []error
		for _, e := range j.Unwrap() {
			p, r := partitionProblems(e)
			ps, rest = append(ps, p...), append(rest, r...)
		}
		return ps, rest
	}
	if inner := errors.Unwrap(err); inner != nil {
		if ps, rest := partitionProblems(inner); len(ps) > 0 && len(rest) == 0 {
			return ps, nil
		}
	}
	return nil, []error{err}
}

// joinProblems makes one error of configuration problems and other start-up failures.
func joinProblems(problems []config.Problem, fails []error) error {
	var err error
	seen := map[string]bool{}
	problems = slices.DeleteFunc(slices.Clone(problems), func(p config.Problem) bool {
		k := p.Error()
		dup := seen[k]
		seen[k] = true
		return dup
	})
	if len(problems) > 0 {
		err = &config.Error{Problems: problems}
	}
	return errors.Join(append([]error{err}, fails...)...)
}

// splitProblems turns an error into problems: a *config.Error's own, or one per joined error.
func splitProblems(err error) []config.Problem {
	if err == nil {
		return nil
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		return ce.Problems
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []config.Problem
		for _, e := range j.Unwrap() {
			out = append(out, splitProblems(e)...)
		}
		return out
	}
	return []config.Problem{{Err: err}}
}

// envProblems turns the *telemetry.EnvError values of err into problems.
func envProblems(err error) []config.Problem {
	var out []config.Problem
	var walk func(error)
	walk = func(e error) {
		var ee *telemetry.EnvError
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
		} else if errors.As(e, &ee) {
			out = append(out, config.Problem{Var: ee.Key, Value: ee.Value, HasValue: true, Err: errors.New(ee.Reason)})
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// release frees what New built when Run ends before starting anything.
func (s *Service) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.settings.ShutdownTimeout)
	defer cancel()
	_ = s.stopClients(ctx)
	_ = s.stopGRPCClients(ctx)
	for i := len(s.closers) - 1; i >= 0; i-- {
		if c := s.closers[i]; c.Stop != nil {
			_ = c.Stop(ctx)
		}
	}
	_ = s.tel.Shutdown(ctx)
}

func defaultEnviron(o *options) func() []string {
	switch {
	case o.environSet && o.environ != nil:
		return o.environ
	case o.environSet || o.lookupSet:
		return func() []string { return nil }
	}
	return os.Environ
}
