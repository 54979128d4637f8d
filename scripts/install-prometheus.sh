#!/usr/bin/env bash
# Installs the Prometheus server that the telemetry integration test scrapes with, and promtool, which
# checks and unit-tests the rules of deploy/prometheus (Debian package `prometheus`, which ships both
# in /usr/bin). Idempotent: when both binaries are already on PATH (or in $(go env GOPATH)/bin) it
# exits at once. The package's own service is not used: the test starts its own server on loopback
# with a generated config and a temporary storage directory.
set -euo pipefail

gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$gobin/$1" ]; }
if have prometheus && have promtool; then
  echo "prometheus and promtool already installed: $(command -v prometheus || echo "$gobin/prometheus"), $(command -v promtool || echo "$gobin/promtool")"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "installing the Debian prometheus package..." >&2
# Refresh the index only when it is missing or older than a day, so repeated runs stay quick.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
  $sudo apt-get update -qq
fi
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v prometheus
version=$(prometheus --version 2>&1) # not `| head -1`: under pipefail, SIGPIPE fails it at random
echo "${version%%$'\n'*}"
command -v promtool
