package dynconfig

import (
	"encoding"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"

	"github.com/kelseyhightower/envconfig"

	"github.com/cloudchassis/kit/config"
)

// ReloadTag marks a field as reloadable from KV: `reload:"true"`. On a struct-typed field it marks
// every field inside.
const ReloadTag = "reload"

// variable is one leaf of a spec, named as package config names it.
type variable struct {
	key, alt   string // upper-case variable name; alt is the unprefixed envconfig tag
	reloadable bool
	secret     bool
}

// leaves walks spec (a pointer to a struct) with package config's naming rules and calls visit for
// every variable with its value, in declaration order.
//
// Why a second walker: config exposes variable names (Reference) but not the struct tags this
// package needs. The result is checked against config.Reference in New, so a divergence between
// the two walkers is an error at start-up, never a silently misnamed variable.
func leaves(spec reflect.Value, prefix string, visit func(v variable, val reflect.Value)) {
	walkStruct(spec.Elem(), prefix, false, visit)
}

func walkStruct(s reflect.Value, prefix string, reload bool, visit func(variable, reflect.Value)) {
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
		r := reload || isTrue(sf.Tag.Get(ReloadTag))
		if fv.Kind() == reflect.Struct && !decodable(fv) {
			inner := prefix
			if !sf.Anonymous || tag != "" {
				inner = key
			}
			walkStruct(fv, inner, r, visit)
			continue
		}
		visit(variable{
			key:        key,
			alt:        strings.ToUpper(tag),
			reloadable: r,
			secret:     isTrue(sf.Tag.Get("secret")) || fv.Type() == reflect.TypeFor[config.Secret](),
		}, fv)
	}
}

// catalog returns the variables of T, checked against config.Reference.
func catalog[T any](prefix string) ([]variable, error) {
	var zero T
	spec := reflect.New(reflect.TypeOf(&zero).Elem())
	if spec.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("dynconfig: %T is not a struct", zero)
	}
	var vars []variable
	leaves(spec, prefix, func(v variable, _ reflect.Value) { vars = append(vars, v) })
	var opts []config.Option
	if prefix != "" {
		opts = append(opts, config.WithPrefix(prefix))
	}
	ref, err := config.Reference(spec.Interface(), opts...)
	if err != nil {
		return nil, fmt.Errorf("dynconfig: %w", err)
	}
	names := make([]string, len(ref))
	for i, r := range ref {
		names[i] = r.Name
	}
	mine := make([]string, len(vars))
	for i, v := range vars {
		mine[i] = v.key
	}
	if !slices.Equal(names, mine) {
		return nil, fmt.Errorf("dynconfig: variable names of %T differ from package config's (%v vs %v): report this as a bug", zero, mine, names)
	}
	return vars, nil
}

func isTrue(s string) bool { return s == "true" || s == "1" || s == "yes" }

// splitWords is envconfig's split_words rule, as package config applies it.
func splitWords(name string) string {
	var words []string
	start := 0
	r := []rune(name)
	lower := func(c rune) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	upper := func(c rune) bool { return c >= 'A' && c <= 'Z' }
	for i := 1; i < len(r); i++ {
		if upper(r[i]) && (lower(r[i-1]) || i+1 < len(r) && upper(r[i-1]) && lower(r[i+1])) {
			words = append(words, string(r[start:i]))
			start = i
		}
	}
	words = append(words, string(r[start:]))
	return strings.Join(words, "_")
}

// decodable reports whether v decodes itself from one string, so a struct is a leaf, not a group.
func decodable(v reflect.Value) bool {
	t := v.Type()
	urlType := reflect.TypeFor[url.URL]()
	if t == urlType || t.Kind() == reflect.Pointer && t.Elem() == urlType {
		return true
	}
	pt := reflect.PointerTo(t)
	if t.Kind() == reflect.Pointer {
		pt = t
	}
	for _, i := range []reflect.Type{
		reflect.TypeFor[envconfig.Decoder](),
		reflect.TypeFor[envconfig.Setter](),
		reflect.TypeFor[encoding.TextUnmarshaler](),
		reflect.TypeFor[encoding.BinaryUnmarshaler](),
	} {
		if pt.Implements(i) {
			return true
		}
	}
	return false
}
