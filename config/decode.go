package config

import (
	"encoding"
	"errors"
	"fmt"
	"math"
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

// decodeValue sets v from s. When quiet, no part of s appears in the error: secrets and values read
// from files are reported by what was expected, not by what was found.
func decodeValue(s string, v reflect.Value, quiet bool) error {
	err := decode(s, v)
	if err == nil || !quiet {
		return err
	}
	var de decodeError
	if errors.As(err, &de) {
		return de // fixed text, nothing from s
	}
	return errors.New("cannot be decoded (the value is not shown)")
}

// decodeError is an error whose text holds nothing of the decoded value.
type decodeError string

func (e decodeError) Error() string { return string(e) }

const (
	errNotInteger  = decodeError("not an integer")
	errNotUint     = decodeError("not a non-negative integer")
	errNotDecimal  = decodeError("not a decimal integer (0x, 0o, 0b and _ are not accepted)")
	errLeadingZero = decodeError("not an integer: a leading zero is ambiguous (010 is octal 8 to some readers); write the number without it")
	errNotNumber   = decodeError("not a number (decimal, like 0.5, 10 or 1e-3; not NaN or Inf)")
	errNumberRange = decodeError("out of range for a number of this size")
	errIntRange    = decodeError("out of range for an integer of this size")
	errNotDuration = decodeError("not a duration (use a number with a unit: 250ms, 30s, 5m)")
	errNotBool     = decodeError("not a boolean (use true or false)")
)

// decode sets v from s. The order of preference is envconfig's: Decoder, Setter, TextUnmarshaler,
// BinaryUnmarshaler, then the kind of the value.
//
// Numbers are stricter than strconv's defaults, which envconfig uses: integers are decimal digits
// with an optional sign (no 0x, 0o, 0b, _ or leading zero, which base 0 would read as octal), and
// floats are decimal and finite (no NaN, Inf, hexadecimal or _). A non-zero float so small that it
// rounds to zero is out of range, not zero.
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
			return errNotDuration
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
			return errNotBool
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if err := checkDecimal(s, true); err != nil {
			return err
		}
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return errIntRange
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if err := checkDecimal(s, false); err != nil {
			return err
		}
		n, err := strconv.ParseUint(s, 10, v.Type().Bits())
		if err != nil {
			return errIntRange
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		f, err := parseFloat(s, v.Type().Bits())
		if err != nil {
			return err
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

// checkDecimal accepts an optional sign (when signed), then decimal digits with no leading zero. It
// refuses what strconv's base 0, which envconfig uses, reads differently from what most people mean:
// 0x50, 0o17, 0b1, 1_000 and 010 (octal 8).
func checkDecimal(s string, signed bool) error {
	bad := errNotInteger
	if !signed {
		bad = errNotUint
	}
	d := s
	if d != "" && (d[0] == '+' || d[0] == '-') {
		if !signed {
			return bad
		}
		d = d[1:]
	}
	if d == "" || strings.IndexFunc(d, func(r rune) bool { return !isDigit(r) }) >= 0 {
		if l := strings.ToLower(d); strings.Contains(l, "_") || len(l) > 2 && l[0] == '0' && strings.ContainsRune("xob", rune(l[1])) {
			return errNotDecimal
		}
		return bad
	}
	if len(d) > 1 && d[0] == '0' {
		return errLeadingZero
	}
	return nil
}

// parseFloat reads a finite decimal number that fits in bits (32 or 64): digits with an optional
// sign, point and exponent (0.5, -3, 1e-3). It refuses NaN, Inf, hexadecimal floats and
// underscores, which strconv.ParseFloat accepts, and a non-zero value too small to represent
// (1e-400), which strconv.ParseFloat rounds to zero. Errors hold nothing of s.
func parseFloat(s string, bits int) (float64, error) {
	if s == "" || strings.Trim(s, "0123456789+-.eE") != "" || strings.IndexFunc(s, isDigit) < 0 {
		return 0, errNotNumber
	}
	f, err := strconv.ParseFloat(s, bits)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, errNumberRange
		}
		return 0, errNotNumber
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errNotNumber
	}
	if f == 0 {
		mant, _, _ := strings.Cut(strings.ToLower(s), "e")
		if strings.ContainsAny(mant, "123456789") {
			return 0, errNumberRange
		}
	}
	return f, nil
}

func isDigit(r rune) bool { return r >= '0' && r <= '9' }

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
