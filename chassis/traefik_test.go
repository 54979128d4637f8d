package chassis_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/internal/consultest"
)

// traefikTags is the recipe of docs/discovery.md ("Traefik"): the tags Traefik's Consul Catalog
// provider reads, as SERVICE_TAGS holds them. Rules use || rather than commas: SERVICE_TAGS is a
// comma-separated list.
const traefikTags = "traefik.enable=true," +
	"traefik.http.routers.shop.rule=Host(`shop.example.com`) || PathPrefix(`/shop`)," +
	"traefik.http.routers.shop.entrypoints=web," +
	"traefik.http.services.shop.loadbalancer.healthcheck.path=/readyz," +
	"traefik.http.services.shop.loadbalancer.healthcheck.port=9090," +
	"traefik.http.services.shop.loadbalancer.healthcheck.interval=2s," +
	"v2"

// traefikLabels reads tags the way Traefik's Consul Catalog provider does: a tag with an '=' is a
// label, key before the first '=' and value after it; keys under the "traefik." prefix configure
// Traefik, other tags are ignored. It reports the tags a key cannot come from (an empty dotted
// segment or characters outside Traefik's label keys).
func traefikLabels(tags []string) (labels map[string]string, bad []string) {
	labels = map[string]string{}
	for _, tag := range tags {
		k, v, ok := strings.Cut(tag, "=")
		if !ok || !strings.HasPrefix(k, "traefik.") {
			continue
		}
		valid := true
		for seg := range strings.SplitSeq(k, ".") {
			valid = valid && seg != "" && strings.Trim(seg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == ""
		}
		if !valid {
			bad = append(bad, tag)
			continue
		}
		labels[k] = v
	}
	return labels, bad
}

// TestTraefikTagsReachConsul registers an instance with the Traefik recipe and reads its tags back
// from the agent's catalog: they arrive unchanged and in order, and parse as the labels Traefik's
// Consul Catalog provider expects. (Traefik itself is not run: it cannot be built here.)
func TestTraefikTagsReachConsul(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	agent := consultest.StartDev(t)
	svc, err := chassis.New("shop", chassis.WithEnv(env("CONSUL_HTTP_ADDR", agent.HTTPAddr, "SERVICE_TAGS", traefikTags)))
	if err != nil {
		t.Fatal(err)
	}
	start(t, svc)
	entries, _, err := agent.Client.Catalog().Service("shop", "", nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("catalog: %d entries, %v", len(entries), err)
	}
	got := entries[0].ServiceTags
	if want := strings.Split(traefikTags, ","); !slices.Equal(got, want) {
		t.Fatalf("tags in Consul:\n%q\nwant\n%q", got, want)
	}
	labels, bad := traefikLabels(got)
	if len(bad) > 0 {
		t.Fatalf("tags Traefik cannot read: %q", bad)
	}
	for k, v := range map[string]string{
		"traefik.enable":                 "true",
		"traefik.http.routers.shop.rule": "Host(`shop.example.com`) || PathPrefix(`/shop`)",
		"traefik.http.services.shop.loadbalancer.healthcheck.path": "/readyz",
	} {
		if labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, labels[k], v)
		}
	}
	if len(labels) != 6 {
		t.Errorf("%d labels, want 6 (the plain tag v2 is not one): %v", len(labels), labels)
	}
}

// A comma inside a rule splits the tag in two: SERVICE_TAGS cannot carry it, which is why the recipe
// writes alternatives with ||. The parser sees the broken halves.
func TestTraefikRuleWithACommaIsSplit(t *testing.T) {
	svc, err := chassis.New("shop", chassis.WithEnv(env("DISCOVERY", "none",
		"SERVICE_TAGS", "traefik.http.routers.shop.rule=Host(`a.example.com`, `b.example.com`)")))
	if err != nil {
		t.Fatal(err)
	}
	tags := svc.Settings().ServiceTags
	if len(tags) != 2 {
		t.Fatalf("tags %q: want the rule split in two at its comma", tags)
	}
	if labels, _ := traefikLabels(tags); labels["traefik.http.routers.shop.rule"] != "Host(`a.example.com`" {
		t.Fatalf("labels %v", labels)
	}
}
