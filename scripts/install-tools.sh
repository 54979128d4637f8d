#!/usr/bin/env bash
# Installs everything the test suite needs beyond Go itself, idempotently: each step returns at once
# when its tool is already present at the right version. Called by `make test` and so by CI.
set -euo pipefail
cd "$(dirname "$0")"
for step in install-consul.sh install-etcd.sh install-netem.sh install-prometheus.sh install-otelcol.sh install-chromium.sh install-govulncheck.sh install-grpc-tools.sh install-python.sh install-haproxy.sh; do
  if [ -f "$step" ]; then
    t0=$(date +%s)
    bash "$step"
    echo "tools: $step done in $(( $(date +%s) - t0 ))s" >&2
  fi
done
