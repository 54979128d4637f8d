package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/go-playground/validator/v10"

	"github.com/cloudchassis/kit/problem"
)

// Config configures a Decoder from the environment (envconfig tags). The size of a body is bounded
// by the server, not here: chassis caps every request body at HTTP_MAX_BODY_BYTES, and Decode
// answers 413 when that cap is hit.
type Config struct {
	AllowUnknown bool `envconfig:"HTTP_ALLOW_UNKNOWN_FIELDS" default:"false" desc:"accept JSON fields the target type does not declare (default: 400)"`
}

// Decoder decodes and validates JSON request bodies. Its zero value is not usable; build one with
// NewDecoder. A Decoder is safe for concurrent use.
//
// A Decoder reads the body as far as the server lets it: under chassis that is HTTP_MAX_BODY_BYTES
// (an *http.MaxBytesError becomes 413). WithMaxBytes sets a tighter bound of its own.
type Decoder struct {
	maxBytes     int64
	allowUnknown bool
	validate     *validator.Validate
}

// DecoderOption configures a Decoder.
type DecoderOption interface{ apply(*Decoder) }

type decoderOptionFunc func(*Decoder)

func (f decoderOptionFunc) apply(o *Decoder) { f(o) }

// WithMaxBytes bounds the body at n bytes, below whatever bound the server sets (default: none of
// the Decoder's own).
func WithMaxBytes(n int64) DecoderOption {
	return decoderOptionFunc(func(d *Decoder) {
		if n > 0 {
			d.maxBytes = n
		}
	})
}

// WithUnknownFields accepts JSON members the target does not declare (default: refused with 400,
// so that typos in optional fields do not pass silently).
func WithUnknownFields(allow bool) DecoderOption {
	return decoderOptionFunc(func(d *Decoder) { d.allowUnknown = allow })
}

// WithValidator uses v (for custom rules); its tag-name function is replaced so that errors name
// fields by their JSON names.
func WithValidator(v *validator.Validate) DecoderOption {
	return decoderOptionFunc(func(d *Decoder) {
		if v != nil {
			d.validate = v
		}
	})
}

// NewDecoder returns a Decoder with the given options.
func NewDecoder(opts ...DecoderOption) *Decoder {
	d := &Decoder{}
	for _, o := range opts {
		o.apply(d)
	}
	if d.validate == nil {
		d.validate = validator.New(validator.WithRequiredStructEnabled())
	}
	d.validate.RegisterTagNameFunc(jsonName)
	return d
}

// NewDecoderFromConfig returns a Decoder for c.
func NewDecoderFromConfig(c Config, opts ...DecoderOption) *Decoder {
	return NewDecoder(append([]DecoderOption{WithUnknownFields(c.AllowUnknown)}, opts...)...)
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return f.Name
	}
	return name
}

var (
	defaultOnce    sync.Once
	defaultDecoder *Decoder
)

func std() *Decoder {
	defaultOnce.Do(func() { defaultDecoder = NewDecoder() })
	return defaultDecoder
}

// Bind decodes r's JSON body into v with the default Decoder and validates it; on failure it writes
// the problem response and returns false. The body is bounded by the server only: under chassis,
// HTTP_MAX_BODY_BYTES; a plain http.Server wants http.MaxBytesHandler or a Decoder WithMaxBytes.
func Bind(w http.ResponseWriter, r *http.Request, v any) bool { return std().Bind(w, r, v) }

// Bind is Decode followed by writing the problem on failure. It reports whether the handler
// should go on.
func (d *Decoder) Bind(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := d.Decode(w, r, v); err != nil {
		WriteError(w, r, err)
		return false
	}
	return true
}

// Decode reads r's body as one JSON value into v and validates v with `validate` struct tags. The
// error is a *problem.Details: 415 for a media type other than application/json (or +json), 413
// for a body over the limit, 400 for malformed JSON, unknown fields, wrong types or trailing data,
// and 422 with one FieldError per failed rule. Field pointers use JSON names.
func (d *Decoder) Decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); !isJSON(ct) {
		return problem.New(http.StatusUnsupportedMediaType, "", "Content-Type must be application/json, got "+strconv.Quote(ct))
	}
	body := r.Body
	if d.maxBytes > 0 {
		if r.ContentLength > d.maxBytes {
			return tooLarge(d.maxBytes)
		}
		body = http.MaxBytesReader(w, r.Body, d.maxBytes)
	}
	if err := d.decode(body, v); err != nil {
		return err
	}
	return d.check(v)
}

// DecodeBytes is Decode for a body already in memory (queues, tests): no content-type check.
func (d *Decoder) DecodeBytes(data []byte, v any) error {
	if d.maxBytes > 0 && int64(len(data)) > d.maxBytes {
		return tooLarge(d.maxBytes)
	}
	if err := d.decode(bytes.NewReader(data), v); err != nil {
		return err
	}
	return d.check(v)
}

func tooLarge(n int64) *problem.Details {
	return problem.New(http.StatusRequestEntityTooLarge, "", "request body is larger than "+strconv.FormatInt(n, 10)+" bytes")
}

func (d *Decoder) decode(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	if !d.allowUnknown {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return decodeProblem(err)
	}
	// One value only: "{}{}" or "{} trailing" is an error, not silently half-read.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge(mbe.Limit)
		}
		return problem.New(http.StatusBadRequest, "", "request body must hold a single JSON value; found data after it")
	}
	return nil
}

func (d *Decoder) check(v any) error {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return nil
	}
	err := d.validate.Struct(v)
	if err == nil {
		return nil
	}
	var ves validator.ValidationErrors
	if !errors.As(err, &ves) {
		return fmt.Errorf("httpx: validate: %w", err)
	}
	p := problem.New(http.StatusUnprocessableEntity, "", "request body failed validation")
	for _, fe := range ves {
		p.Errors = append(p.Errors, problem.FieldError{Pointer: pointer(fe.Namespace()), Detail: ruleText(fe), Rule: fe.Tag()})
	}
	return p
}

// pointer turns validator's "Order.items[0].sku" (JSON names thanks to the tag-name function) into
// the JSON Pointer "/items/0/sku".
func pointer(ns string) string {
	_, rest, ok := strings.Cut(ns, ".") // drop the top-level type name
	if !ok {
		return ""
	}
	var b strings.Builder
	for _, part := range strings.Split(rest, ".") {
		name, idx, hasIdx := strings.Cut(part, "[")
		b.WriteByte('/')
		b.WriteString(escapePointer(name))
		for hasIdx {
			var i string
			i, idx, _ = strings.Cut(idx, "]")
			b.WriteByte('/')
			b.WriteString(escapePointer(i))
			_, idx, hasIdx = strings.Cut(idx, "[")
		}
	}
	return b.String()
}

func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

func ruleText(fe validator.FieldError) string {
	p := fe.Param()
	switch fe.Tag() {
	case "required", "required_if", "required_unless", "required_with", "required_without":
		return "is required"
	case "min":
		return "must be at least " + p + lenUnit(fe)
	case "max":
		return "must be at most " + p + lenUnit(fe)
	case "len":
		return "must have length " + p
	case "gt", "gte", "lt", "lte":
		ops := map[string]string{"gt": "greater than", "gte": "at least", "lt": "less than", "lte": "at most"}
		return "must be " + ops[fe.Tag()] + " " + p
	case "oneof":
		return "must be one of: " + strings.ReplaceAll(p, " ", ", ")
	case "email":
		return "must be an email address"
	case "url", "uri", "http_url":
		return "must be a URL"
	case "uuid", "uuid4":
		return "must be a UUID"
	}
	if p != "" {
		return "must satisfy " + fe.Tag() + "=" + p
	}
	return "must satisfy " + fe.Tag()
}

func lenUnit(fe validator.FieldError) string {
	switch fe.Kind() {
	case reflect.String:
		return " characters"
	case reflect.Slice, reflect.Array, reflect.Map:
		return " items"
	}
	return ""
}

func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}

func decodeProblem(err error) *problem.Details {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return tooLarge(mbe.Limit)
	case errors.Is(err, io.EOF):
		return problem.New(http.StatusBadRequest, "", "request body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return problem.New(http.StatusBadRequest, "", "request body is truncated JSON")
	case errors.As(err, &se):
		return problem.New(http.StatusBadRequest, "", "malformed JSON at byte "+strconv.FormatInt(se.Offset, 10))
	case errors.As(err, &te):
		p := problem.New(http.StatusBadRequest, "", "wrong JSON type")
		ptr := "/" + strings.ReplaceAll(te.Field, ".", "/")
		if te.Field == "" {
			ptr = ""
		}
		p.Errors = []problem.FieldError{{Pointer: ptr, Detail: "must be " + article(te.Type.Kind()) + ", got " + te.Value, Rule: "type"}}
		return p
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		p := problem.New(http.StatusBadRequest, "", "unknown field "+strconv.Quote(name))
		p.Errors = []problem.FieldError{{Pointer: "/" + escapePointer(name), Detail: "is not a known field", Rule: "unknown"}}
		return p
	}
	return problem.New(http.StatusBadRequest, "", "request body is not valid JSON")
}

func article(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "a " + k.String()
}

// WriteError writes err as a problem response: a *problem.Details as it is (with the request path
// as instance when it has none), anything else as a 500 that does not leak the error text.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var p *problem.Details
	if !errors.As(err, &p) {
		problem.Write(w, http.StatusInternalServerError, "")
		return
	}
	if p.Instance == "" && r != nil {
		cp := *p
		cp.Instance = r.URL.Path
		p = &cp
	}
	p.Write(w)
}
