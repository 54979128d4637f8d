#!/usr/bin/env bash
# Installs HAProxy, the edge router of the edge interop test (deploy/haproxy) and of the demo, from the
# Debian package. Idempotent: when haproxy is on PATH (or in /usr/sbin) it prints the version and exits.
# Any 2.x with `resolvers`, `server-template` and SRV support (2.0+) does; Debian 12 ships 2.6.
set -euo pipefail

for bin in "$(command -v haproxy 2>/dev/null || true)" /usr/sbin/haproxy; do
  if [ -n "$bin" ] && [ -x "$bin" ]; then
    out=$("$bin" -v 2>/dev/null || true)
    echo "${out%%$'\n'*} already at $bin"
    exit 0
  fi
done

if ! command -v apt-get >/dev/null; then
  echo "install-haproxy: no apt-get; install HAProxy 2.x with your package manager" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
echo "installing haproxy from the Debian package..." >&2
$sudo apt-get install -y --no-install-recommends haproxy >/dev/null || {
  $sudo apt-get update >/dev/null
  $sudo apt-get install -y --no-install-recommends haproxy >/dev/null
}
out=$(/usr/sbin/haproxy -v 2>/dev/null || true)
echo "${out%%$'\n'*}"
