package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/discovery"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseStatic(t *testing.T) {
	got, err := discovery.ParseStatic(" 10.0.0.1:8080, host:9090,,[::1]:80 ")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.1:8080", "host:9090", "[::1]:80"}
	if len(got) != len(want) {
		t.Fatalf("got %d instances, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].ID != w || got[i].HostPort() != w {
			t.Errorf("instance %d = %+v, want %s", i, got[i], w)
		}
	}
	if got[2].Address != "::1" || got[2].Port != 80 {
		t.Errorf("IPv6 instance parsed as %+v", got[2])
	}

	empty, err := discovery.ParseStatic("")
	if err != nil || len(empty) != 0 {
		t.Errorf(`ParseStatic("") = %v, %v; want empty, nil`, empty, err)
	}
}

func TestParseStaticErrors(t *testing.T) {
	_, err := discovery.ParseStatic("a:1,b,c:0,d:70000,:80,a:1,e:x")
	if err == nil {
		t.Fatal("want error")
	}
	for _, frag := range []string{`"b"`, `"c:0"`, `"d:70000"`, `":80"`, `listed twice`, `"e:x"`} {
		if !strings.Contains(err.Error(), frag) {
			t.Errorf("error %q does not mention %s", err, frag)
		}
	}
}

func FuzzParseStatic(f *testing.F) {
	for _, s := range []string{"10.0.0.1:8080,host:9090", "", "[::1]:1", "a:b:c", ",,,", "h:65535", "h:0", " x :1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		insts, err := discovery.ParseStatic(s)
		if err != nil {
			if insts != nil {
				t.Fatalf("instances returned with error")
			}
			return
		}
		seen := map[string]bool{}
		for _, in := range insts {
			if in.Port < 1 || in.Port > 65535 || in.Address == "" {
				t.Fatalf("bad instance %+v from %q", in, s)
			}
			if seen[in.ID] {
				t.Fatalf("duplicate %s from %q", in.ID, s)
			}
			seen[in.ID] = true
			// Round trip: the IDs re-parse to the same list.
			again, err := discovery.ParseStatic(in.HostPort())
			if err != nil || len(again) != 1 || !again[0].Equal(in) {
				t.Fatalf("round trip of %+v: %v %v", in, again, err)
			}
		}
	})
}

func TestStaticNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		insts := []discovery.Instance{{ID: "a", Address: "10.0.0.1", Port: 1}}
		s := discovery.NewStatic("svc", insts)
		insts[0].Address = "changed" // NewStatic copied the list
		snap, err := s.Next(t.Context(), 0)
		if err != nil || snap.Version != 1 || len(snap.Instances) != 1 || snap.Instances[0].Address != "10.0.0.1" {
			t.Fatalf("Next(0) = %+v, %v", snap, err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
		defer cancel()
		_, err = s.Next(ctx, snap.Version)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Next(after current) = %v, want deadline exceeded after blocking", err)
		}
	})
}

func ExampleParseStatic() {
	insts, err := discovery.ParseStatic("10.0.0.1:8080, pricing-2:8080")
	if err != nil {
		fmt.Println(err)
		return
	}
	w := discovery.NewStatic("pricing", insts)
	snap, _ := w.Next(context.Background(), 0)
	for _, in := range snap.Instances {
		fmt.Println(in.ID)
	}
	// Output:
	// 10.0.0.1:8080
	// pricing-2:8080
}
