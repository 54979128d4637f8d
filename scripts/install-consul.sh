#!/usr/bin/env bash
# Installs the Consul agent that the integration tests and the demo use, built from the Go module proxy.
#
# Consul v1.14.4 is the last MPL-2.0 release that builds here. Its go.mod carries replace directives to
# nested folders, so `go install` refuses it: we copy the module, drop those replace lines and build.
# Idempotent: when $CONSUL_BIN already reports the wanted version it exits at once.
set -euo pipefail

VERSION="${CONSUL_VERSION:-1.14.4}"
BIN_DIR="${CONSUL_BIN_DIR:-$(go env GOPATH)/bin}"
BIN="$BIN_DIR/consul"

# Output is captured before it is looked at: with pipefail, `consul version | head -1` fails whenever
# head exits before consul has written its last line (SIGPIPE, exit 141), and the check then fails
# at random.
first_line() { local out; out=$("$@" 2>/dev/null || true); printf '%s\n' "${out%%$'\n'*}"; }

if [ -x "$BIN" ] && [ "$(first_line "$BIN" version)" = "Consul v${VERSION}" ]; then
  echo "consul v${VERSION} already at $BIN"
  exit 0
fi

echo "building consul v${VERSION} from the Go module proxy (a few minutes the first time)..." >&2
dir=$(GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/consul@v${VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
  echo "install-consul: could not download github.com/hashicorp/consul@v${VERSION}" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cp -r "$dir/." "$work/"
chmod -R u+w "$work"
# Drop only the replace lines that point into the module's own nested folders.
sed -i -E '/^replace github\.com\/hashicorp\/consul\/[^ ]+ => \.\//d' "$work/go.mod"
mkdir -p "$BIN_DIR"
(cd "$work" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
  -ldflags "-X github.com/hashicorp/consul/version.GitCommit=v${VERSION} -X github.com/hashicorp/consul/version.Version=${VERSION} -X github.com/hashicorp/consul/version.VersionPrerelease=" \
  -o "$BIN.tmp" .)
mv "$BIN.tmp" "$BIN"
first_line "$BIN" version
