package config_test

import (
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/internal/hostilefile"
)

type numbers struct {
	Int   int             `envconfig:"INT"`
	Int8  int8            `envconfig:"INT8"`
	Uint  uint16          `envconfig:"UINT"`
	Float float64         `envconfig:"FLOAT"`
	F32   float32         `envconfig:"F32"`
	Size  config.ByteSize `envconfig:"SIZE"`
	Ints  []int           `envconfig:"INTS"`
	Rates map[string]float64
}

// TestNumbersAreStrict: integers are decimal (no base prefixes, underscores or octal-looking leading
// zeros), floats are finite and decimal, and overflow is an error, never a wrapped or rounded value.
func TestNumbersAreStrict(t *testing.T) {
	good := map[string]string{
		"INT": "-42", "INT8": "+127", "UINT": "65535", "FLOAT": "1e-300", "F32": "0.25", "SIZE": "1.5KiB", "INTS": "0, 7",
		"RATES": "a:0.5,b:-0",
	}
	var n numbers
	if err := config.Load(&n, config.WithLookup(config.MapLookup(good))); err != nil {
		t.Fatal(err)
	}
	if n.Int != -42 || n.Int8 != 127 || n.Uint != 65535 || n.Float != 1e-300 || n.F32 != 0.25 || n.Size != 1536 ||
		!reflect.DeepEqual(n.Ints, []int{0, 7}) || n.Rates["a"] != 0.5 {
		t.Fatalf("decoded wrongly: %+v", n)
	}
	bad := []struct{ key, value, want string }{
		{"INT", "0x50", "not a decimal integer"},
		{"INT", "0o17", "not a decimal integer"},
		{"INT", "0b1", "not a decimal integer"},
		{"INT", "8_080", "not a decimal integer"},
		{"INT", "010", "leading zero"},
		{"INT", "-010", "leading zero"},
		{"INT", "1e10", "not an integer"},
		{"INT", "99999999999999999999", "out of range"},
		{"INT8", "128", "out of range"},
		{"INT", " 1", "not an integer"},
		{"UINT", "-1", "not a non-negative integer"},
		{"UINT", "+1", "not a non-negative integer"},
		{"UINT", "65536", "out of range"},
		{"FLOAT", "NaN", "not a number"},
		{"FLOAT", "nan", "not a number"},
		{"FLOAT", "Inf", "not a number"},
		{"FLOAT", "-infinity", "not a number"},
		{"FLOAT", "0x1p4", "not a number"},
		{"FLOAT", "1_0", "not a number"},
		{"FLOAT", "1e400", "out of range"},
		{"FLOAT", "1e-400", "out of range"},
		{"FLOAT", ".", "not a number"},
		{"F32", "1e39", "out of range"},
		{"SIZE", "0x1p4", "not a byte size"},
		{"SIZE", "NaN", "not a byte size"},
		{"INTS", "1,0x2", "not a decimal integer"},
		{"RATES", "a:NaN", "not a number"},
	}
	for _, c := range bad {
		var n numbers
		err := config.Load(&n, config.WithLookup(config.MapLookup(map[string]string{c.key: c.value})))
		var ce *config.Error
		if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0].Var != c.key || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s=%q: got %v, want a problem saying %q", c.key, c.value, err, c.want)
		}
	}
}

// FuzzDecode checks the decoder's promises on any input: no panic; an accepted integer is exactly
// its decimal spelling (so nothing was read as hexadecimal, octal or with separators); an accepted
// float is finite, and zero only when spelled as zero; every rejection is a problem of the variable.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{"8080", "-1", "+7", "0", "-0", "010", "0x50", "8_080", "1e10", "NaN", "Inf", "1e-300",
		"1e-400", "1e400", "0.5", ".5", "5.", "1,2", "a:1", "10MiB", "1.5Gi", "\x00", "९"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		env := map[string]string{}
		for _, k := range []string{"INT", "INT8", "UINT", "FLOAT", "F32", "SIZE", "INTS", "RATES"} {
			env[k] = v
		}
		var n numbers
		err := config.Load(&n, config.WithLookup(config.MapLookup(env)))
		failed := map[string]bool{}
		if err != nil {
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error is not a problem list: %v", err)
			}
			for _, p := range ce.Problems {
				if p.Var == "" {
					t.Fatalf("problem without a variable: %v", err)
				}
				failed[p.Var] = true
			}
		}
		if v == "" {
			return // unset
		}
		canon := strings.TrimPrefix(v, "+")
		if canon == "-0" {
			canon = "0"
		}
		if !failed["INT"] && strconv.Itoa(n.Int) != canon {
			t.Fatalf("INT=%q decoded as %d", v, n.Int)
		}
		if !failed["UINT"] && strconv.FormatUint(uint64(n.Uint), 10) != v {
			t.Fatalf("UINT=%q decoded as %d", v, n.Uint)
		}
		for _, x := range []float64{n.Float, float64(n.F32)} {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				t.Fatalf("%q decoded as %g", v, x)
			}
		}
		if !failed["FLOAT"] && n.Float == 0 && strings.ContainsAny(strings.Split(strings.ToLower(v), "e")[0], "123456789") {
			t.Fatalf("FLOAT=%q rounded to zero", v)
		}
		if !failed["SIZE"] && n.Size < 0 {
			t.Fatalf("SIZE=%q decoded as %d", v, n.Size)
		}
	})
}

type fileSettings struct {
	Level string   `envconfig:"LOG_LEVEL" validate:"oneof=debug info"`
	Port  int      `envconfig:"PORT"`
	Ports []int    `envconfig:"PORTS"`
	Token string   `envconfig:"TOKEN" secret:"true"`
	Hosts []string `envconfig:"HOSTS"`
}

// TestFileVariablesAreBounded: NAME_FILE naming /dev/zero, a FIFO nobody writes to, or a file over
// MaxFileSize fails at once with a problem that names the file; content never appears in a
// message, whether the setting is secret or not.
func TestFileVariablesAreBounded(t *testing.T) {
	dir := t.TempDir()
	files := hostilefile.Make(t, dir, "s3cr3t-hash")
	fifo, big, shadow := files.FIFO, files.Big, files.Shadow
	for _, c := range []struct {
		path string
		want error
	}{
		{"/dev/zero", config.ErrNotRegular},
		{fifo, config.ErrNotRegular},
		{dir, config.ErrNotRegular},
		{big, config.ErrFileTooLarge},
	} {
		start := time.Now()
		var s fileSettings
		err := config.Load(&s, config.WithLookup(config.MapLookup(map[string]string{"PORT_FILE": c.path})))
		if took := time.Since(start); took > time.Second {
			t.Errorf("%s: took %s", c.path, took)
		}
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), `PORT_FILE="`+c.path+`"`) {
			t.Errorf("%s: got %v, want %v naming PORT_FILE", c.path, err, c.want)
		}
	}

	var s fileSettings
	env := map[string]string{"LOG_LEVEL_FILE": shadow, "PORT_FILE": shadow, "PORTS_FILE": shadow, "TOKEN_FILE": shadow}
	err := config.Load(&s, config.WithLookup(config.MapLookup(env)))
	var ce *config.Error
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("want 3 problems (TOKEN takes any text), got %v", err)
	}
	msg := err.Error()
	for _, part := range []string{"root", "s3cr3t", "19000"} {
		if strings.Contains(msg, part) {
			t.Errorf("file content %q in the message:\n%s", part, msg)
		}
	}
	for _, want := range []string{`LOG_LEVEL_FILE="` + shadow + `": file content: must be one of: debug, info`,
		`PORT_FILE="` + shadow + `": file content: not an integer`, `PORTS_FILE="` + shadow + `": file content: not an integer`} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	// A secret's bad item is not echoed either, even set directly.
	err = config.Load(&struct {
		Keys []int `envconfig:"KEYS" secret:"true"`
	}{}, config.WithLookup(config.MapLookup(map[string]string{"KEYS": "1,hunter2"})))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("secret item echoed: %v", err)
	}
}

type retries struct {
	Retries int `envconfig:"RETRIES" default:"2"`
	Window  int `envconfig:"BREAKER_WINDOW"`
	Fails   int `envconfig:"BREAKER_FAILURES" default:"5"`
}

// Validate names variables without the prefix, as resilience.Config does.
func (r retries) Validate() error {
	var errs []error
	if r.Retries < 0 {
		errs = append(errs, errors.New("RETRIES="+strconv.Itoa(r.Retries)+": must be 0 or more"))
	}
	if r.Window != 0 && r.Window < r.Fails {
		errs = append(errs, errors.New("BREAKER_WINDOW="+strconv.Itoa(r.Window)+": must be at least BREAKER_FAILURES="+strconv.Itoa(r.Fails)))
	}
	return errors.Join(errs...)
}

// TestValidateErrorsGetTheFullName: a Validate method's plain errors name variables without the
// prefix; problems carry the full names.
func TestValidateErrorsGetTheFullName(t *testing.T) {
	var r retries
	env := config.MapLookup(map[string]string{"CLIENT_PRICING_RETRIES": "-1", "CLIENT_PRICING_BREAKER_WINDOW": "3"})
	err := config.Load(&r, config.WithStrictPrefix("CLIENT_PRICING"), config.WithLookup(env))
	var ce *config.Error
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("want 2 problems, got %v", err)
	}
	if p := ce.Problems[0]; p.Var != "CLIENT_PRICING_RETRIES" || p.Value != "-1" || p.Err.Error() != "must be 0 or more" {
		t.Errorf("problem 0: %+v", p)
	}
	if got, want := ce.Problems[1].Error(), "CLIENT_PRICING_BREAKER_WINDOW=\"3\": must be at least CLIENT_PRICING_BREAKER_FAILURES=5"; got != want {
		t.Errorf("problem 1:\n got %s\nwant %s", got, want)
	}
}

// TestValidateRunsBesideDecodeErrors: a range check in Validate is reported with a decode error of
// another variable, and a relation that names the variable that failed is not (it would judge a
// value the user did not set).
func TestValidateRunsBesideDecodeErrors(t *testing.T) {
	var r retries
	env := config.MapLookup(map[string]string{"CLIENT_PRICING_RETRIES": "-1", "CLIENT_PRICING_BREAKER_FAILURES": "abc",
		"CLIENT_PRICING_BREAKER_WINDOW": "3"})
	err := config.Load(&r, config.WithStrictPrefix("CLIENT_PRICING"), config.WithLookup(env))
	var ce *config.Error
	if !errors.As(err, &ce) || len(ce.Problems) != 2 || ce.Problems[0].Var != "CLIENT_PRICING_BREAKER_FAILURES" ||
		ce.Problems[1].Var != "CLIENT_PRICING_RETRIES" {
		t.Fatalf("want the decode error and RETRIES, got %v", err)
	}
}
