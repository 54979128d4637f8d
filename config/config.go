package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/go-playground/validator/v10"
)

// Why not envconfig.Process itself: it stops at the first bad variable, reads only the process
// environment (so two services in one test process cannot have different settings) and has no
// NAME_FILE support. Load keeps envconfig's tag vocabulary, key naming rules and its Decoder and Setter
// interfaces, so a struct written for envconfig loads the same here, and adds what a service needs:
// every problem at once, injectable lookup, files for secrets, validation and redaction.

// Lookup returns the value of an environment variable and whether it is set. os.LookupEnv is one.
type Lookup func(key string) (string, bool)

// MapLookup returns a Lookup over a fixed map, for tests and for running several services in one process.
func MapLookup(env map[string]string) Lookup {
	return func(key string) (string, bool) {
		v, ok := env[key]
		return v, ok
	}
}

// Option configures Load, Reference and Dump.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	prefix     string
	strict     bool
	noDefaults bool
	lookup     Lookup
	readFile   func(name string) ([]byte, error)
}

// WithPrefix puts PREFIX_ in front of every variable name, as envconfig.Process(prefix, ...) does.
// When a field has an explicit envconfig tag, the unprefixed name is also tried, as in envconfig.
func WithPrefix(prefix string) Option { return optionFunc(func(o *options) { o.prefix = prefix }) }

// WithStrictPrefix is WithPrefix without envconfig's fallback to the unprefixed tag name: only
// PREFIX_NAME is read. Use it when several structs share field names, such as the settings of each
// dependency (CLIENT_PRICING_TIMEOUT must not fall back to a TIMEOUT meant for something else).
func WithStrictPrefix(prefix string) Option {
	return optionFunc(func(o *options) { o.prefix, o.strict = prefix, true })
}

// WithoutDefaults makes Load ignore `default` tags: unset variables leave the field as the caller set
// it. Use it to layer the environment over values set in code.
func WithoutDefaults() Option { return optionFunc(func(o *options) { o.noDefaults = true }) }

// WithLookup reads variables through l instead of os.LookupEnv.
func WithLookup(l Lookup) Option { return optionFunc(func(o *options) { o.lookup = l }) }

// WithReadFile replaces the reader of NAME_FILE variables (tests). The default is ReadFileBounded
// with MaxFileSize.
func WithReadFile(f func(name string) ([]byte, error)) Option {
	return optionFunc(func(o *options) { o.readFile = f })
}

func readFileDefault(name string) ([]byte, error) { return ReadFileBounded(name, MaxFileSize) }

func newOptions(opts []Option) options {
	o := options{lookup: os.LookupEnv, readFile: readFileDefault}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}

// Validator is implemented by config structs (at any depth) that check relations between fields.
// Return a *Error, an error made with Invalid, or errors.Join of several to report more than one problem.
type Validator interface {
	Validate() error
}

// ErrInvalidSpec is returned when the spec given to Load is not a pointer to a struct.
var ErrInvalidSpec = errors.New("config: specification must be a non-nil pointer to a struct")

// Load reads the environment into spec, a pointer to a struct, and validates it.
//
// Every problem is collected: the returned error is a *Error that lists all of them. Fields of spec
// whose variable is unset keep their default tag value or, without a default, their current value, so
// a caller may pre-fill spec with defaults computed in code. An empty value counts as unset.
//
// A value read from a NAME_FILE variable is never shown in a problem: the problem names NAME_FILE
// and the file's path instead, so that pointing a setting at the wrong file cannot print it.
func Load(spec any, opts ...Option) error {
	o := newOptions(opts)
	fields, err := walk(spec, o.prefix)
	if err != nil {
		return err
	}
	var errs Error
	failed := map[string]bool{}
	reads := map[string]reading{}
	for _, f := range fields {
		r, err := o.value(f)
		if err != nil {
			errs.add(Problem{Var: r.name, Value: r.path, HasValue: r.path != "", Want: f.want(), Err: err})
			failed[f.path] = true
			continue
		}
		if r.src == sourceUnset {
			if f.required {
				errs.add(Problem{Var: f.key, Want: f.want(), Err: errRequired})
				failed[f.path] = true
			}
			continue
		}
		reads[f.path] = r
		quiet := f.secret || r.src == sourceFile
		raw := r.raw
		if isTrue(f.sf.Tag.Get("lower")) {
			raw = strings.ToLower(raw) // `lower:"true"`: the value is case-insensitive (LOG_LEVEL=DEBUG)
		}
		if err := decodeValue(raw, f.value, quiet); err != nil {
			errs.add(f.problem(r, err))
			failed[f.path] = true
		}
	}
	validateTags(spec, fields, reads, failed, &errs)
	validateMethods(spec, fields, reads, failed, o.prefix, &errs)
	if len(errs.Problems) > 0 {
		return &errs
	}
	return nil
}

var errRequired = errors.New("required, not set")

type source int

const (
	sourceUnset source = iota
	sourceDefault
	sourceEnv
	sourceFile
)

// reading is where a field's raw text came from.
type reading struct {
	raw  string
	src  source
	name string // the variable read: the field's key, its alt, or either with _FILE
	path string // the file, for sourceFile
}

// value returns the raw text for a field and where it came from.
func (o options) value(f field) (reading, error) {
	key, v, ok := f.key, "", false
	if v, ok = o.lookup(f.key); !ok || v == "" {
		if f.alt != "" && f.alt != f.key && !o.strict {
			if av, aok := o.lookup(f.alt); aok && av != "" {
				key, v, ok = f.alt, av, true
			}
		}
	}
	fileVar := key + "_FILE"
	path, hasFile := o.lookup(fileVar)
	hasFile = hasFile && path != ""
	switch {
	case ok && v != "" && hasFile:
		return reading{name: key}, fmt.Errorf("both %s and %s are set; set only one", key, fileVar)
	case ok && v != "":
		return reading{raw: v, src: sourceEnv, name: key}, nil
	case hasFile:
		b, err := o.readFile(path)
		if err != nil {
			return reading{name: fileVar, path: path}, fmt.Errorf("reading the file: %w", err)
		}
		return reading{raw: strings.TrimRight(string(b), "\r\n"), src: sourceFile, name: fileVar, path: path}, nil
	case f.hasDefault && !o.noDefaults:
		return reading{raw: f.def, src: sourceDefault, name: f.key}, nil
	}
	return reading{name: f.key}, nil
}

// problem reports a bad value of f. A value from a file is shown by its path, never its content.
func (f field) problem(r reading, err error) Problem {
	if r.src == sourceFile {
		return Problem{Var: r.name, Value: r.path, HasValue: true, Want: f.want(), Err: fileContentError{err}}
	}
	return Problem{Var: f.key, Value: f.show(r.raw), HasValue: true, Want: f.want(), Err: err}
}

// fileContentError marks a problem with what a NAME_FILE file holds.
type fileContentError struct{ err error }

func (e fileContentError) Error() string { return "file content: " + e.err.Error() }
func (e fileContentError) Unwrap() error { return e.err }

// field is one leaf variable of a spec.
type field struct {
	key, alt   string // upper-case variable name; alt is the unprefixed envconfig tag
	path       string // Go path from the root struct, e.g. "DB.Password"
	def        string
	hasDefault bool
	required   bool
	secret     bool
	desc       string
	value      reflect.Value
	sf         reflect.StructField
	tags       []reflect.StructTag // from the outermost struct field to this one
}

func (f field) show(raw string) string {
	if f.secret {
		return redacted
	}
	return raw
}

// want describes the expected value, for error messages.
func (f field) want() string {
	w := typeName(f.value.Type())
	if f.desc != "" {
		w += ": " + f.desc
	}
	return w
}

func walk(spec any, prefix string) ([]field, error) {
	v := reflect.ValueOf(spec)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil, ErrInvalidSpec
	}
	var out []field
	walkStruct(v.Elem(), prefix, "", nil, &out)
	return out, nil
}

// walkStruct follows envconfig's naming: the key is the envconfig tag or the field name (split into
// words with split_words), prefixed by the parent's key for nested non-embedded structs, upper-cased.
func walkStruct(s reflect.Value, prefix, path string, parents []reflect.StructTag, out *[]field) {
	t := s.Type()
	for i := 0; i < s.NumField(); i++ {
		sf := t.Field(i)
		fv := s.Field(i)
		if !fv.CanSet() || isTrue(sf.Tag.Get("ignored")) {
			continue
		}
		for fv.Kind() == reflect.Pointer {
			if fv.IsNil() {
				if fv.Type().Elem().Kind() != reflect.Struct || decodable(fv) {
					break
				}
				fv.Set(reflect.New(fv.Type().Elem()))
			}
			fv = fv.Elem()
		}
		tag := sf.Tag.Get("envconfig")
		key := sf.Name
		if isTrue(sf.Tag.Get("split_words")) {
			key = splitWords(sf.Name)
		}
		if tag != "" {
			key = tag
		}
		if prefix != "" {
			key = prefix + "_" + key
		}
		key = strings.ToUpper(key)
		p := sf.Name
		if path != "" {
			p = path + "." + sf.Name
		}
		tags := append(slices.Clip(parents), sf.Tag)
		if fv.Kind() == reflect.Struct && !decodable(fv) {
			inner := prefix
			if !sf.Anonymous || tag != "" {
				inner = key
			}
			walkStruct(fv, inner, p, tags, out)
			continue
		}
		def, hasDef := sf.Tag.Lookup("default")
		*out = append(*out, field{
			key:        key,
			alt:        strings.ToUpper(tag),
			path:       p,
			def:        def,
			hasDefault: hasDef,
			required:   isTrue(sf.Tag.Get("required")),
			secret:     isTrue(sf.Tag.Get("secret")) || fv.Type() == secretType,
			desc:       sf.Tag.Get("desc"),
			value:      fv,
			sf:         sf,
			tags:       tags,
		})
	}
}

func isTrue(s string) bool { return s == "true" || s == "1" || s == "yes" }

// splitWords turns "MaxBodyBytes" into "Max_Body_Bytes" and "HTTPPort" into "HTTP_Port", like envconfig.
func splitWords(name string) string {
	var words []string
	start := 0
	r := []rune(name)
	for i := 1; i < len(r); i++ {
		lower := func(c rune) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
		upper := func(c rune) bool { return c >= 'A' && c <= 'Z' }
		// Boundary before an upper-case letter that follows a lower-case one, or that starts a word
		// after an acronym ("HTTPPort": boundary before the 'P' of "Port").
		if upper(r[i]) && (lower(r[i-1]) || i+1 < len(r) && upper(r[i-1]) && lower(r[i+1])) {
			words = append(words, string(r[start:i]))
			start = i
		}
	}
	words = append(words, string(r[start:]))
	return strings.Join(words, "_")
}

// validate is built on first use: validator.New reflects and allocates, which start-up need not pay
// when no field has a validate tag.
var validate = sync.OnceValue(func() *validator.Validate {
	return validator.New(validator.WithRequiredStructEnabled())
})

// validateTags runs `validate` tags. Fields that already failed to decode are not reported twice.
func validateTags(spec any, fields []field, reads map[string]reading, failed map[string]bool, errs *Error) {
	byPath := map[string]field{}
	any := false
	for _, f := range fields {
		byPath[f.path] = f
		any = any || f.sf.Tag.Get("validate") != ""
	}
	if !any {
		return
	}
	err := validate().Struct(spec)
	var ves validator.ValidationErrors
	if !errors.As(err, &ves) {
		if err != nil {
			errs.add(Problem{Err: err})
		}
		return
	}
	for _, fe := range ves {
		ns := fe.StructNamespace()
		if i := strings.IndexByte(ns, '.'); i >= 0 {
			ns = ns[i+1:]
		}
		f, ok := byPath[ns]
		if !ok || failed[f.path] {
			continue
		}
		failed[f.path] = true
		rule := errors.New(ruleText(fe))
		if r, ok := reads[f.path]; ok {
			errs.add(f.problem(r, rule))
		} else {
			errs.add(Problem{Var: f.key, Want: f.want(), Err: rule})
		}
	}
}

// validateMethods calls Validate on nested structs first, then on the root.
//
// They run even when some fields failed to decode or to pass their tags, so that a range check in
// Validate is reported with the others at once; a failed field keeps its previous value, so a
// problem that names a failed variable (as its Var or in its message) is dropped: it would judge a
// value the user did not set.
func validateMethods(spec any, fields []field, reads map[string]reading, failed map[string]bool, prefix string, errs *Error) {
	n := namer{keys: map[string]bool{}, hidden: map[string]bool{}, bare: map[string]string{}, failed: map[string]bool{}}
	for _, f := range fields {
		n.keys[f.key] = true
		n.failed[f.key] = failed[f.path]
		n.hidden[f.key] = f.secret || reads[f.path].src == sourceFile
		if prefix != "" {
			if b, ok := strings.CutPrefix(f.key, strings.ToUpper(prefix)+"_"); ok {
				n.bare[b] = f.key
			}
		}
	}
	var visit func(v reflect.Value)
	visit = func(v reflect.Value) {
		for v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return
			}
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct || decodable(v) {
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				visit(v.Field(i))
			}
		}
		if !v.CanAddr() {
			return
		}
		if val, ok := v.Addr().Interface().(Validator); ok {
			n.add(val.Validate(), errs)
		}
	}
	visit(reflect.ValueOf(spec))
}

// namer turns the errors of Validate methods into problems under the variables' full names.
type namer struct {
	keys   map[string]bool   // every variable of the spec
	hidden map[string]bool   // secret, or read from a file: the value is not shown
	bare   map[string]string // name without the prefix -> full name, when Load has a prefix
	failed map[string]bool   // variables that failed to decode or to pass their tags
}

func (n namer) add(err error, errs *Error) {
	if err == nil {
		return
	}
	var ce *Error
	if errors.As(err, &ce) && ce != errs {
		for _, p := range ce.Problems {
			n.keep(n.fix(p), errs)
		}
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			n.add(e, errs)
		}
		return
	}
	var p *Problem
	if errors.As(err, &p) {
		n.keep(n.fix(*p), errs)
		return
	}
	n.keep(n.fix(n.parse(err.Error())), errs)
}

// keep adds p unless it names a variable that failed.
func (n namer) keep(p Problem, errs *Error) {
	names := []string{p.Var}
	replaceNames(p.Err.Error(), func(w string) string {
		names = append(names, w, n.bare[w])
		return w
	})
	for _, name := range names {
		if n.failed[name] {
			return
		}
	}
	errs.add(p)
}

// fix puts the prefix on a problem's variable and hides values that must not be shown.
func (n namer) fix(p Problem) Problem {
	if full, ok := n.bare[p.Var]; ok && !n.keys[p.Var] {
		p.Var = full
	}
	if n.hidden[p.Var] && p.HasValue {
		p.Value = redacted
	}
	return p
}

// parse reads a plain error of a Validate method. Such errors name variables without the prefix
// that Load was given (a struct does not know it: resilience.Config says "RETRIES=-1: must be 0 or
// more", read as CLIENT_PRICING_RETRIES): every such name is replaced by the full one, and a message
// of the form NAME=VALUE: REASON becomes a problem of that variable.
func (n namer) parse(msg string) Problem {
	if len(n.bare) > 0 {
		msg = replaceNames(msg, func(w string) string {
			if full, ok := n.bare[w]; ok && !n.keys[w] {
				return full
			}
			return w
		})
	}
	if name, rest, ok := strings.Cut(msg, "="); ok && n.keys[name] {
		if val, reason, ok := strings.Cut(rest, ": "); ok && reason != "" && !strings.ContainsAny(val, "=,") {
			if uq, err := strconv.Unquote(val); err == nil {
				val = uq
			}
			return Problem{Var: name, Value: val, HasValue: true, Err: plainError(reason)}
		}
	}
	return Problem{Err: plainError(msg)}
}

// replaceNames applies f to every maximal run of upper-case letters, digits and underscores in s.
func replaceNames(s string, f func(string) string) string {
	isName := func(c byte) bool { return c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' }
	var b strings.Builder
	for i := 0; i < len(s); {
		if !isName(s[i]) {
			b.WriteByte(s[i])
			i++
			continue
		}
		j := i
		for j < len(s) && isName(s[j]) {
			j++
		}
		b.WriteString(f(s[i:j]))
		i = j
	}
	return b.String()
}

func ruleText(fe validator.FieldError) string {
	param := fe.Param()
	switch fe.Tag() {
	case "required":
		return "required, not set"
	case "min", "gte":
		return "must be at least " + param
	case "max", "lte":
		return "must be at most " + param
	case "gt":
		return "must be greater than " + param
	case "lt":
		return "must be less than " + param
	case "oneof":
		return "must be one of: " + strings.Join(strings.Fields(param), ", ")
	case "url", "http_url":
		return "must be a URL"
	case "hostname_port":
		return "must be host:port"
	case "email":
		return "must be an email address"
	}
	if param != "" {
		return fmt.Sprintf("must satisfy %s=%s", fe.Tag(), param)
	}
	return "must satisfy " + fe.Tag()
}

// Field is one leaf variable of a spec, for packages that layer another source over the environment
// (coordination/dynconfig) and need the struct tags.
type Field struct {
	Var    string              // variable name, prefixed
	Alt    string              // the unprefixed envconfig tag, tried after Var; empty with WithStrictPrefix
	Secret bool                // tagged secret:"true" or of type Secret
	Tags   []reflect.StructTag // the tags from the outermost struct field down to this one
	Value  reflect.Value       // the field itself, settable
}

// Fields lists the leaf variables of spec, a pointer to a struct, in declaration order, with the same
// naming rules as Load.
func Fields(spec any, opts ...Option) ([]Field, error) {
	o := newOptions(opts)
	fields, err := walk(spec, o.prefix)
	if err != nil {
		return nil, err
	}
	out := make([]Field, len(fields))
	for i, f := range fields {
		alt := f.alt
		if o.strict || alt == f.key {
			alt = ""
		}
		out[i] = Field{Var: f.key, Alt: alt, Secret: f.secret, Tags: f.tags, Value: f.value}
	}
	return out, nil
}
