#!/usr/bin/env bash
# Installs the etcd server and etcdctl that the etcd integration tests and the demo's -registry=etcd
# use, built from the Go module proxy at one version.
#
# etcd's own main module (go.etcd.io/etcd/v3) is not served by the proxy, and etcdctl's go.mod has
# replace directives to sibling folders, so `go install` takes neither. Both binaries are thin mains
# over packages the proxy does serve (go.etcd.io/etcd/server/v3/etcdmain and
# go.etcd.io/etcd/etcdctl/v3/ctlv3): we write those two mains in a scratch module and build them.
# Nothing of etcd's server enters the library's go.mod. Idempotent: when both binaries already report
# the wanted version it exits at once.
set -euo pipefail

VERSION="${ETCD_VERSION:-3.7.3}"
BIN_DIR="${ETCD_BIN_DIR:-$(go env GOPATH)/bin}"

# Output is captured before it is looked at (see install-consul.sh: head and pipefail).
first_line() { local out; out=$("$@" 2>/dev/null || true); printf '%s\n' "${out%%$'\n'*}"; }

if [ -x "$BIN_DIR/etcd" ] && [ -x "$BIN_DIR/etcdctl" ] &&
  [ "$(first_line "$BIN_DIR/etcd" --version)" = "etcd Version: ${VERSION}" ] &&
  [ "$(first_line "$BIN_DIR/etcdctl" version)" = "etcdctl version: ${VERSION}" ]; then
  echo "etcd ${VERSION} already at $BIN_DIR/etcd (and etcdctl)"
  exit 0
fi

echo "building etcd ${VERSION} and etcdctl from the Go module proxy (a minute or two the first time)..." >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/etcd" "$work/etcdctl"
cat >"$work/go.mod" <<EOF
module cloudchassis.local/etcdbuild

go 1.26
EOF
cat >"$work/etcd/main.go" <<'EOF'
// Command etcd is etcd's server, as etcd's own main module builds it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
cat >"$work/etcdctl/main.go" <<'EOF'
// Command etcdctl is etcd's command-line client.
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
EOF
mkdir -p "$BIN_DIR"
(
  cd "$work"
  export GOFLAGS=-mod=mod CGO_ENABLED=0
  go get "go.etcd.io/etcd/server/v3@v${VERSION}" "go.etcd.io/etcd/etcdctl/v3@v${VERSION}" >/dev/null 2>&1 ||
    go get "go.etcd.io/etcd/server/v3@v${VERSION}" "go.etcd.io/etcd/etcdctl/v3@v${VERSION}"
  go mod tidy
  go build -trimpath -o "$BIN_DIR/etcd.tmp" ./etcd
  go build -trimpath -o "$BIN_DIR/etcdctl.tmp" ./etcdctl
)
mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
mv "$BIN_DIR/etcdctl.tmp" "$BIN_DIR/etcdctl"
first_line "$BIN_DIR/etcd" --version
first_line "$BIN_DIR/etcdctl" version
