package dynconfig

import (
	"fmt"
	"reflect"

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

// leaves walks spec (a pointer to a struct) with package config's rules and calls visit for every
// variable with its value, in declaration order. A field is reloadable when it or a struct that
// contains it carries `reload:"true"`.
func leaves(spec reflect.Value, prefix string, visit func(v variable, val reflect.Value)) error {
	var opts []config.Option
	if prefix != "" {
		opts = append(opts, config.WithPrefix(prefix))
	}
	fields, err := config.Fields(spec.Interface(), opts...)
	if err != nil {
		return fmt.Errorf("dynconfig: %w", err)
	}
	for _, f := range fields {
		reload := false
		for _, tag := range f.Tags {
			reload = reload || isTrue(tag.Get(ReloadTag))
		}
		visit(variable{key: f.Var, alt: f.Alt, reloadable: reload, secret: f.Secret}, f.Value)
	}
	return nil
}

// catalog returns the variables of T.
func catalog[T any](prefix string) ([]variable, error) {
	var zero T
	spec := reflect.New(reflect.TypeOf(&zero).Elem())
	if spec.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("dynconfig: %T is not a struct", zero)
	}
	var vars []variable
	err := leaves(spec, prefix, func(v variable, _ reflect.Value) { vars = append(vars, v) })
	return vars, err
}

func isTrue(s string) bool { return s == "true" || s == "1" || s == "yes" }
