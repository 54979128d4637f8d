#!/usr/bin/env bash
# Installs govulncheck and builds the Go vulnerability database it reads, both from the Go module proxy,
# so that `make vuln` (part of `make test`) works on a machine that reaches no other host.
#
# The database: the module golang.org/x/vulndb carries every report as OSV JSON (data/osv); its own
# command cmd/indexdb writes them in the v1 layout that `govulncheck -db file://DIR` reads. The vulndb
# version is pinned so that CI is reproducible: a newly published vulnerability must not turn an
# unrelated change red. To check against the newest reports, run
#   VULNDB_VERSION=latest bash scripts/install-govulncheck.sh && make vuln VULNDB_VERSION=latest
# (how old the pinned one is shows in its pseudo-version's date; bump it with the toolchain).
#
# Idempotent: seconds when govulncheck is at the wanted version and the database directory exists.
# Cold: about two minutes (indexdb's dependencies download once). Prints the database directory last.
set -euo pipefail

GOVULNCHECK_VERSION="${GOVULNCHECK_VERSION:-v1.9.0}"
VULNDB_VERSION="${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}"
BIN_DIR="$(go env GOPATH)/bin"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/chassis"

if [ "$VULNDB_VERSION" = latest ]; then
  VULNDB_VERSION=$(cd /tmp && GO111MODULE=on go list -m -f '{{.Version}}' golang.org/x/vulndb@latest)
fi
DB="$CACHE/vulndb-$VULNDB_VERSION"

# govulncheck -version prints "Scanner: govulncheck@v1.9.0"; read captured output, not a pipe (a grep -q
# that exits first would kill the writer with SIGPIPE under pipefail).
have=""
if [ -x "$BIN_DIR/govulncheck" ]; then
  have=$("$BIN_DIR/govulncheck" -version 2>/dev/null || true)
fi
if ! grep -q "govulncheck@${GOVULNCHECK_VERSION}\$" <<<"$have"; then
  echo "installing govulncheck ${GOVULNCHECK_VERSION}..." >&2
  GOBIN="$BIN_DIR" go install "golang.org/x/vuln/cmd/govulncheck@${GOVULNCHECK_VERSION}"
fi

if ! [ -f "$DB/index/modules.json" ]; then
  echo "building the vulnerability database from golang.org/x/vulndb@${VULNDB_VERSION}..." >&2
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/vulndb.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  src=$(cd "$tmp" && go mod download -json "golang.org/x/vulndb@${VULNDB_VERSION}")
  src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$src")
  if ! [ -d "$src/data/osv" ]; then
    echo "golang.org/x/vulndb@${VULNDB_VERSION} has no data/osv" >&2
    exit 1
  fi
  (cd "$tmp" && go run "golang.org/x/vulndb/cmd/indexdb@${VULNDB_VERSION}" -vulns "$src/data/osv" -out "$tmp/db")
  rm -rf "$DB"
  mv "$tmp/db" "$DB"
fi
echo "$DB"
