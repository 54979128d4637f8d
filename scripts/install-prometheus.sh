#!/usr/bin/env bash
# Installs the Prometheus server that the telemetry integration test scrapes with (Debian package
# `prometheus`). Idempotent: when a prometheus binary is already on PATH (or in $(go env GOPATH)/bin) it
# exits at once. The package's own service is not used: the test starts its own server on loopback with
# a generated config and a temporary storage directory.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
  echo "prometheus already at $(command -v prometheus)"
  exit 0
fi
gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
if [ -x "$gobin/prometheus" ]; then
  echo "prometheus already at $gobin/prometheus"
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
