package config_test

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudchassis/kit/config"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type DB struct {
	URL      *url.URL      `envconfig:"URL" required:"true" desc:"database URL"`
	Password config.Secret `envconfig:"PASSWORD" desc:"database password"`
	MaxConns int           `split_words:"true" default:"10" validate:"min=1,max=100"`
}

type spec struct {
	Port      int             `envconfig:"PORT" default:"8080" validate:"min=0,max=65535" desc:"public port"`
	Timeout   time.Duration   `envconfig:"TIMEOUT" default:"5s"`
	Debug     bool            `envconfig:"DEBUG"`
	Peers     []string        `envconfig:"PEERS"`
	Weights   map[string]int  `envconfig:"WEIGHTS"`
	BodyLimit config.ByteSize `envconfig:"BODY_LIMIT" default:"1MiB"`
	Token     string          `envconfig:"TOKEN" secret:"true"`
	Mode      string          `envconfig:"MODE" default:"fast" validate:"oneof=fast safe"`
	DB        DB
	skipped   int //nolint:unused // unexported fields are ignored
	Ignored   int `ignored:"true"`
}

func load(t *testing.T, env map[string]string, opts ...config.Option) (spec, error) {
	t.Helper()
	var s spec
	err := config.Load(&s, append([]config.Option{config.WithLookup(config.MapLookup(env))}, opts...)...)
	return s, err
}

func TestLoadDecodesEveryKind(t *testing.T) {
	s, err := load(t, map[string]string{
		"PORT": "9000", "TIMEOUT": "250ms", "DEBUG": "true", "PEERS": "a:1, b:2",
		"WEIGHTS": "x:1,y:2", "BODY_LIMIT": "10MB", "DB_URL": "postgres://u:pw@db:5432/app",
		"DB_MAX_CONNS": "20", "DB_PASSWORD": "hunter2",
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.Port != 9000 || s.Timeout != 250*time.Millisecond || !s.Debug || len(s.Peers) != 2 || s.Peers[1] != "b:2" ||
		s.Weights["y"] != 2 || s.BodyLimit != 10_000_000 || s.DB.URL.Host != "db:5432" || s.DB.MaxConns != 20 ||
		s.DB.Password.Reveal() != "hunter2" || s.Mode != "fast" {
		t.Fatalf("decoded wrongly: %+v", s)
	}
}

func TestLoadReportsEveryProblemAtOnce(t *testing.T) {
	_, err := load(t, map[string]string{
		"PORT": "abc", "TIMEOUT": "5", "BODY_LIMIT": "lots", "MODE": "slow", "TOKEN": "", "DB_MAX_CONNS": "0",
	})
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *config.Error, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`PORT="abc": not an integer; want integer: public port`,
		`TIMEOUT="5": not a duration`,
		`BODY_LIMIT="lots": not a byte size`,
		`MODE="slow": must be one of: fast, safe`,
		`DB_URL: required, not set; want URL: database URL`,
		`DB_MAX_CONNS="0": must be at least 1`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	if len(ce.Problems) != 6 {
		t.Errorf("want 6 problems, got %d:\n%s", len(ce.Problems), msg)
	}
}

func TestLoadRedactsSecrets(t *testing.T) {
	var s struct {
		Token config.Secret `envconfig:"TOKEN" validate:"min=10"`
		Key   int           `envconfig:"KEY" secret:"true"`
	}
	err := config.Load(&s, config.WithLookup(config.MapLookup(map[string]string{"TOKEN": "short", "KEY": "s3cr3t"})))
	if err == nil {
		t.Fatal("want an error")
	}
	if strings.Contains(err.Error(), "short") || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("secret leaked: %v", err)
	}
	if !strings.Contains(err.Error(), `KEY="[REDACTED]": not an integer`) {
		t.Fatalf("unexpected message: %v", err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := config.Secret("hunter2")
	for _, got := range []string{s.String(), s.GoString()} {
		if strings.Contains(got, "hunter2") {
			t.Fatalf("leaked: %s", got)
		}
	}
	b, _ := s.MarshalText()
	if string(b) != "[REDACTED]" {
		t.Fatalf("MarshalText = %s", b)
	}
}

func TestFileVariables(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pw")
	if err := os.WriteFile(p, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := load(t, map[string]string{"DB_URL": "http://x", "DB_PASSWORD_FILE": p})
	if err != nil {
		t.Fatal(err)
	}
	if s.DB.Password.Reveal() != "from-file" {
		t.Fatalf("password = %q", s.DB.Password.Reveal())
	}
	_, err = load(t, map[string]string{"DB_URL": "http://x", "DB_PASSWORD_FILE": p, "DB_PASSWORD": "x"})
	if err == nil || !strings.Contains(err.Error(), "both DB_PASSWORD and DB_PASSWORD_FILE are set") {
		t.Fatalf("want conflict error, got %v", err)
	}
	_, err = load(t, map[string]string{"DB_URL": "http://x", "DB_PASSWORD_FILE": filepath.Join(dir, "missing")})
	if err == nil || !strings.Contains(err.Error(), "DB_PASSWORD_FILE=") || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("want read error, got %v", err)
	}
}

type crossChecked struct {
	Min int `envconfig:"MIN" default:"1"`
	Max int `envconfig:"MAX" default:"10"`
}

func (c *crossChecked) Validate() error {
	var errs []error
	if c.Max < c.Min {
		errs = append(errs, config.Invalid("MAX", "", "must be at least MIN"))
	}
	if c.Min < 0 {
		errs = append(errs, errors.New("MIN must not be negative"))
	}
	return errors.Join(errs...)
}

func TestValidateMethodJoinsProblems(t *testing.T) {
	var c crossChecked
	err := config.Load(&c, config.WithLookup(config.MapLookup(map[string]string{"MIN": "-5", "MAX": "-6"})))
	var ce *config.Error
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("want 2 problems, got %v", err)
	}
	if err := config.Load(&c, config.WithLookup(config.MapLookup(nil))); err != nil {
		t.Fatal(err)
	}
}

func TestEmptyValueCountsAsUnset(t *testing.T) {
	s, err := load(t, map[string]string{"PORT": "", "DB_URL": "http://x"})
	if err != nil || s.Port != 8080 {
		t.Fatalf("port=%d err=%v", s.Port, err)
	}
}

func TestPrefixAndAlt(t *testing.T) {
	var s struct {
		Port int `envconfig:"PORT"`
		Name string
	}
	err := config.Load(&s, config.WithPrefix("app"), config.WithLookup(config.MapLookup(map[string]string{"PORT": "1", "APP_NAME": "n"})))
	if err != nil || s.Port != 1 || s.Name != "n" {
		t.Fatalf("%+v %v", s, err)
	}
}

func TestStrictPrefixAndWithoutDefaults(t *testing.T) {
	type deps struct {
		Timeout time.Duration `envconfig:"TIMEOUT" default:"10s"`
		Retries int           `envconfig:"RETRIES" default:"2"`
	}
	env := config.MapLookup(map[string]string{"TIMEOUT": "1h", "CLIENT_PRICING_RETRIES": "5"})
	var d deps
	if err := config.Load(&d, config.WithStrictPrefix("CLIENT_PRICING"), config.WithLookup(env)); err != nil {
		t.Fatal(err)
	}
	if d.Timeout != 10*time.Second || d.Retries != 5 {
		t.Fatalf("strict prefix read an unprefixed name: %+v", d)
	}
	d = deps{Timeout: 3 * time.Second, Retries: 1} // values from code
	if err := config.Load(&d, config.WithStrictPrefix("CLIENT_PRICING"), config.WithoutDefaults(), config.WithLookup(env)); err != nil {
		t.Fatal(err)
	}
	if d.Timeout != 3*time.Second || d.Retries != 5 {
		t.Fatalf("environment must layer over code values: %+v", d)
	}
}

func TestInvalidSpec(t *testing.T) {
	var s spec
	if err := config.Load(s); !errors.Is(err, config.ErrInvalidSpec) {
		t.Fatalf("got %v", err)
	}
}

func TestReferenceAndDump(t *testing.T) {
	vars, err := config.Reference(&spec{})
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(vars))
	for i, v := range vars {
		names[i] = v.Name
	}
	want := "PORT TIMEOUT DEBUG PEERS WEIGHTS BODY_LIMIT TOKEN MODE DB_URL DB_PASSWORD DB_MAX_CONNS"
	if strings.Join(names, " ") != want {
		t.Fatalf("names = %s", strings.Join(names, " "))
	}
	var md strings.Builder
	if err := config.WriteMarkdown(&md, vars); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| `PORT` | integer | `8080` |  | public port (`min=0,max=65535`) |") {
		t.Fatalf("markdown:\n%s", md.String())
	}
	var usage strings.Builder
	_ = config.WriteUsage(&usage, vars)
	if !strings.Contains(usage.String(), "DB_URL        database URL (URL, required)") {
		t.Fatalf("usage:\n%s", usage.String())
	}

	env := map[string]string{"DB_URL": "postgres://u:pw@db/app", "DB_PASSWORD": "hunter2", "TOKEN": "tok"}
	s, err := load(t, env)
	if err != nil {
		t.Fatal(err)
	}
	dump, err := config.Dump(&s, config.WithLookup(config.MapLookup(env)))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]config.Setting{}
	for _, d := range dump {
		got[d.Name] = d
	}
	if got["DB_PASSWORD"].Value != "[REDACTED]" || got["TOKEN"].Value != "[REDACTED]" {
		t.Fatalf("secret in dump: %+v", dump)
	}
	if strings.Contains(got["DB_URL"].Value, "pw") || got["DB_URL"].Source != "env" {
		t.Fatalf("url in dump: %+v", got["DB_URL"])
	}
	if got["PORT"].Source != "default" || got["DEBUG"].Source != "unset" || got["BODY_LIMIT"].Value != "1MiB" {
		t.Fatalf("sources: %+v", dump)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]config.ByteSize{
		"512": 512, "64KiB": 64 << 10, "10MB": 10e6, "1.5Gi": 3 << 29, "2k": 2000, " 3 mib ": 3 << 20, "7B": 7,
	} {
		got, err := config.ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("%q: got %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MB", "-1", "1e400", "NaN", "9223372036854775807GiB", "1 2"} {
		if _, err := config.ParseByteSize(bad); err == nil {
			t.Errorf("%q: want error", bad)
		}
	}
}

func FuzzLoad(f *testing.F) {
	for _, s := range []string{"8080", "abc", "5s", "-1", "0x10", "a:1,b:2", ",", "1e9", "10MiB", "http://h", "", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		env := map[string]string{}
		for _, k := range []string{"PORT", "TIMEOUT", "DEBUG", "PEERS", "WEIGHTS", "BODY_LIMIT", "TOKEN", "MODE", "DB_URL", "DB_MAX_CONNS"} {
			env[k] = v
		}
		var s spec
		err := config.Load(&s, config.WithLookup(config.MapLookup(env)))
		if err == nil {
			return
		}
		var ce *config.Error
		if !errors.As(err, &ce) || len(ce.Problems) == 0 {
			t.Fatalf("error is not a problem list: %v", err)
		}
		for _, p := range ce.Problems {
			if p.Var == "" {
				t.Fatalf("problem without a variable: %v", err)
			}
			if p.Var == "TOKEN" && v != "" && strings.Contains(p.Error(), v) && len(v) > 3 {
				t.Fatalf("secret leaked: %v", err)
			}
		}
	})
}

func TestFields(t *testing.T) {
	type limits struct {
		RPS int `envconfig:"RPS" default:"10"`
	}
	var s struct {
		Limits limits `reload:"true"`
		Token  string `envconfig:"TOKEN" secret:"true"`
	}
	fields, err := config.Fields(&s, config.WithPrefix("APP"))
	if err != nil {
		t.Fatal(err)
	}
	if len(fields) != 2 {
		t.Fatalf("%+v", fields)
	}
	rps, tok := fields[0], fields[1]
	if rps.Var != "APP_LIMITS_RPS" || rps.Alt != "RPS" || len(rps.Tags) != 2 || rps.Tags[0].Get("reload") != "true" {
		t.Fatalf("rps: %+v", rps)
	}
	if tok.Var != "APP_TOKEN" || !tok.Secret || len(tok.Tags) != 1 {
		t.Fatalf("token: %+v", tok)
	}
	rps.Value.SetInt(42)
	if s.Limits.RPS != 42 {
		t.Fatal("Value is not the field itself")
	}
	fields, _ = config.Fields(&s, config.WithStrictPrefix("APP"))
	if fields[0].Alt != "" {
		t.Fatalf("strict prefix has no alternative name: %+v", fields[0])
	}
}
