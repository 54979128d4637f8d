package httpx_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/httpx"
	"github.com/cloudchassis/kit/problem"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type item struct {
	SKU      string `json:"sku" validate:"required"`
	Quantity int    `json:"qty" validate:"min=1,max=100"`
}

type order struct {
	Customer string `json:"customer" validate:"required,email"`
	Items    []item `json:"items" validate:"required,min=1,dive"`
	Note     string `json:"note,omitempty" validate:"max=10"`
}

func post(body, ct string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
	if ct != "" {
		r.Header.Set("Content-Type", ct)
	}
	return r
}

func TestBind(t *testing.T) {
	d := httpx.NewDecoder(httpx.WithMaxBytes(256))
	tests := []struct {
		name     string
		body, ct string
		status   int
		pointers []string
	}{
		{"valid", `{"customer":"a@b.co","items":[{"sku":"x","qty":2}]}`, "application/json", 0, nil},
		{"vendor json", `{"customer":"a@b.co","items":[{"sku":"x","qty":2}]}`, "application/vnd.shop+json; charset=utf-8", 0, nil},
		{"wrong media type", `{}`, "text/plain", 415, nil},
		{"no media type", `{}`, "", 415, nil},
		{"too large", `{"customer":"` + strings.Repeat("a", 300) + `"}`, "application/json", 413, nil},
		{"malformed", `{"customer":`, "application/json", 400, nil},
		{"syntax", `{"customer" "x"}`, "application/json", 400, nil},
		{"empty", ``, "application/json", 400, nil},
		{"unknown field", `{"customer":"a@b.co","items":[{"sku":"x","qty":2}],"admin":true}`, "application/json", 400, []string{"/admin"}},
		{"wrong type", `{"customer":"a@b.co","items":[{"sku":"x","qty":"two"}]}`, "application/json", 400, []string{"/items/qty"}},
		{"trailing data", `{"customer":"a@b.co","items":[{"sku":"x","qty":2}]} {}`, "application/json", 400, nil},
		{"trailing garbage", `{"customer":"a@b.co","items":[{"sku":"x","qty":2}]}x`, "application/json", 400, nil},
		{"validation", `{"customer":"nope","items":[{"qty":0},{"sku":"y","qty":101}],"note":"far too long"}`, "application/json", 422,
			[]string{"/customer", "/items/0/sku", "/items/0/qty", "/items/1/qty", "/note"}},
		{"missing list", `{"customer":"a@b.co"}`, "application/json", 422, []string{"/items"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			var o order
			ok := d.Bind(rec, post(tt.body, tt.ct), &o)
			if tt.status == 0 {
				if !ok {
					t.Fatalf("refused: %s", rec.Body)
				}
				return
			}
			if ok || rec.Code != tt.status {
				t.Fatalf("ok=%v status %d, want %d: %s", ok, rec.Code, tt.status, rec.Body)
			}
			if rec.Header().Get("Content-Type") != problem.ContentType {
				t.Fatalf("Content-Type %q", rec.Header().Get("Content-Type"))
			}
			var p problem.Details
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			if p.Instance != "/orders" || p.Detail == "" {
				t.Errorf("problem = %+v", p)
			}
			var got []string
			for _, fe := range p.Errors {
				got = append(got, fe.Pointer)
				if fe.Detail == "" || fe.Rule == "" {
					t.Errorf("field error without detail or rule: %+v", fe)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.pointers) && tt.pointers != nil {
				t.Errorf("pointers %v, want %v", got, tt.pointers)
			}
		})
	}
}

func TestUnknownFieldsAllowed(t *testing.T) {
	d := httpx.NewDecoderFromConfig(httpx.Config{AllowUnknown: true})
	var o order
	if err := d.DecodeBytes([]byte(`{"customer":"a@b.co","items":[{"sku":"x","qty":1}],"extra":1}`), &o); err != nil {
		t.Fatal(err)
	}
}

// FuzzDecode checks that any body either decodes into a value that passes validation or gives a
// 4xx problem — never a panic, a 5xx or an error of another type.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"customer":"a@b.co","items":[{"sku":"x","qty":2}]}`, `{"items":[{}]}`, `[]`, `null`, `{"a":1}{}`, `"\ud800"`, `{"items":[{"qty":1e400}]}`} {
		f.Add([]byte(s))
	}
	d := httpx.NewDecoder(httpx.WithMaxBytes(4096))
	f.Fuzz(func(t *testing.T, body []byte) {
		var o order
		err := d.DecodeBytes(body, &o)
		if err == nil {
			return
		}
		p, ok := err.(*problem.Details)
		if !ok {
			t.Fatalf("error of type %T: %v", err, err)
		}
		if p.Status < 400 || p.Status > 499 {
			t.Fatalf("status %d for a client's body", p.Status)
		}
	})
}

func TestETag(t *testing.T) {
	cc := &httpx.CacheControl{MaxAge: 60_000_000_000, Public: true}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, r, http.StatusOK, map[string]string{"id": "1"}, cc)
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/items/1", nil))
	etag := rec.Header().Get("ETag")
	if rec.Code != 200 || etag == "" || rec.Header().Get("Cache-Control") != "public, max-age=60" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
		r := httptest.NewRequest("GET", "/items/1", nil)
		r.Header.Set("If-None-Match", inm)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 || rec.Header().Get("Cache-Control") == "" {
			t.Errorf("If-None-Match %s: %d %q", inm, rec.Code, rec.Body)
		}
	}
	r := httptest.NewRequest("GET", "/items/1", nil)
	r.Header.Set("If-None-Match", `"stale"`)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != 200 {
		t.Errorf("non-matching tag: %d", rec.Code)
	}
	if got := (httpx.CacheControl{NoStore: true}).String(); got != "no-store" {
		t.Errorf("no-store: %q", got)
	}
	if got := (httpx.CacheControl{Private: true, NoCache: true, StaleWhileRevalidate: 30e9, Immutable: true}).String(); got != "no-cache, private, stale-while-revalidate=30, immutable" {
		t.Errorf("got %q", got)
	}
}

func ExampleBind() {
	type signup struct {
		Email string `json:"email" validate:"required,email"`
		Age   int    `json:"age" validate:"gte=18"`
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in signup
		if !httpx.Bind(w, r, &in) {
			return
		}
		fmt.Fprintln(w, "welcome", in.Email)
	})
	r := httptest.NewRequest("POST", "/signup", strings.NewReader(`{"email":"x","age":12}`))
	r.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	fmt.Print(rec.Code, " ", rec.Body.String())
	// Output:
	// 422 {"title":"Unprocessable Entity","status":422,"detail":"request body failed validation","instance":"/signup","errors":[{"pointer":"/email","detail":"must be an email address","rule":"email"},{"pointer":"/age","detail":"must be at least 18","rule":"gte"}]}
}
