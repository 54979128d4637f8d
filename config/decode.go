package config

import (
	"encoding"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
)

var (
	durationType = reflect.TypeFor[time.Duration]()
	urlType      = reflect.TypeFor[url.URL]()
	secretType   = reflect.TypeFor[Secret]()
	byteSizeType = reflect.TypeFor[ByteSize]()
)

// decodable reports whether v decodes itself from one string (so a struct is a leaf, not a group).
func decodable(v reflect.Value) bool {
	t := v.Type()
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

// decode sets v from s. The order of preference is envconfig's: Decoder, Setter, TextUnmarshaler,
// BinaryUnmarshaler, then the kind of the value.
func decode(s string, v reflect.Value) error {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		if v.Type().Elem() == urlType {
			return decodeURL(s, v.Elem())
		}
		return decode(s, v.Elem())
	}
	if v.Type() == urlType {
		return decodeURL(s, v)
	}
	if v.CanAddr() {
		switch d := v.Addr().Interface().(type) {
		case envconfig.Decoder:
			return d.Decode(s)
		case envconfig.Setter:
			return d.Set(s)
		case encoding.TextUnmarshaler:
			return d.UnmarshalText([]byte(s))
		case encoding.BinaryUnmarshaler:
			return d.UnmarshalBinary([]byte(s))
		}
	}
	if v.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return errors.New("not a duration (use a number with a unit: 250ms, 30s, 5m)")
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("not a boolean (use true or false)")
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 0, v.Type().Bits())
		if err != nil {
			return numError(err, "an integer")
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 0, v.Type().Bits())
		if err != nil {
			return numError(err, "a non-negative integer")
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(s, v.Type().Bits())
		if err != nil {
			return numError(err, "a number")
		}
		v.SetFloat(f)
	case reflect.Slice:
		return decodeSlice(s, v)
	case reflect.Map:
		return decodeMap(s, v)
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

func numError(err error, what string) error {
	if errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("out of range for %s of this size", what)
	}
	return fmt.Errorf("not %s", what)
}

func decodeURL(s string, v reflect.Value) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" && u.Opaque == "" && u.Path == "" {
		return errors.New("not an absolute URL (use scheme://host[:port][/path])")
	}
	v.Set(reflect.ValueOf(*u))
	return nil
}

// decodeSlice splits on commas, trimming spaces around items; empty items are errors. []byte takes
// the string's bytes, as in envconfig.
func decodeSlice(s string, v reflect.Value) error {
	if v.Type().Elem().Kind() == reflect.Uint8 {
		v.SetBytes([]byte(s))
		return nil
	}
	parts := strings.Split(s, ",")
	out := reflect.MakeSlice(v.Type(), len(parts), len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return fmt.Errorf("item %d is empty", i+1)
		}
		if err := decode(p, out.Index(i)); err != nil {
			return fmt.Errorf("item %d %q: %w", i+1, p, err)
		}
	}
	v.Set(out)
	return nil
}

// decodeMap reads "key:value,key:value", as envconfig does.
func decodeMap(s string, v reflect.Value) error {
	out := reflect.MakeMap(v.Type())
	for i, pair := range strings.Split(s, ",") {
		k, val, ok := strings.Cut(pair, ":")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return fmt.Errorf("item %d %q is not key:value", i+1, pair)
		}
		kv := reflect.New(v.Type().Key()).Elem()
		if err := decode(k, kv); err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
		vv := reflect.New(v.Type().Elem()).Elem()
		if err := decode(strings.TrimSpace(val), vv); err != nil {
			return fmt.Errorf("value of %q: %w", k, err)
		}
		out.SetMapIndex(kv, vv)
	}
	v.Set(out)
	return nil
}

// typeName names a type for references and error messages.
func typeName(t reflect.Type) string {
	switch t {
	case durationType:
		return "duration"
	case urlType, reflect.PointerTo(urlType):
		return "URL"
	case secretType:
		return "secret string"
	case byteSizeType:
		return "byte size"
	}
	if t.Kind() == reflect.Pointer {
		return typeName(t.Elem())
	}
	switch t.Kind() {
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "bytes"
		}
		return "comma-separated list of " + typeName(t.Elem())
	case reflect.Map:
		return "comma-separated key:value pairs"
	}
	if t.Kind() == reflect.String && t.Name() == "string" {
		return "string"
	}
	return t.String()
}

// display renders a decoded value back to text (for dumps and validation messages).
func display(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return ""
		}
		v = v.Elem()
	}
	switch x := v.Interface().(type) {
	case url.URL:
		return x.Redacted()
	case fmt.Stringer:
		return x.String()
	}
	if v.CanAddr() {
		if s, ok := v.Addr().Interface().(fmt.Stringer); ok {
			return s.String()
		}
	}
	switch v.Kind() {
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return string(v.Bytes())
		}
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = display(v.Index(i))
		}
		return strings.Join(parts, ",")
	case reflect.Map:
		keys := v.MapKeys()
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, display(k)+":"+display(v.MapIndex(k)))
		}
		slices.Sort(parts)
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v.Interface())
}
