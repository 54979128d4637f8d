#!/usr/bin/env bash
# Installs python3, the non-Go backend of the ambassador's integration tests (cmd/ambassador runs
# testdata/backend.py, an http.server, as three instances). Idempotent: returns at once when python3
# can import http.server. Needs root. Debian's python3-minimal lacks http.server (it is in
# libpython3-stdlib), so the package is python3, without its recommendations.
set -euo pipefail
if python3 -c 'import http.server' >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-python: python3 with http.server is missing and this is not root; run as root: apt-get install -y python3" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 >/dev/null
python3 -c 'import http.server'

