package haproxy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cloudchassis/kit/deploy/haproxy"
)

// haproxyBin returns the haproxy binary, skipping the test when there is none.
func haproxyBin(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"haproxy", "/usr/sbin/haproxy"} {
		if bin, err := exec.LookPath(p); err == nil {
			return bin
		}
	}
	t.Skip("haproxy not installed: run scripts/install-haproxy.sh")
	return ""
}

func writeConfig(t *testing.T, c haproxy.Config) string {
	t.Helper()
	var b bytes.Buffer
	if err := c.Write(&b); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The rendered configuration is one HAProxy accepts (haproxy -c), warnings included.
func TestConfigIsValid(t *testing.T) {
	bin := haproxyBin(t)
	path := writeConfig(t, haproxy.Config{Listen: "127.0.0.1:18080", DNS: "127.0.0.1:8600", Service: "shop"})
	out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("WARNING")) {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
}

func TestConfigRejectsMissingFields(t *testing.T) {
	for _, c := range []haproxy.Config{{DNS: "x:1", Service: "s"}, {Listen: "x:1", Service: "s"}, {Listen: "x:1", DNS: "x:1"},
		{Listen: "x:1", DNS: "x:1", Service: "a b"}} {
		if err := c.Write(&bytes.Buffer{}); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
