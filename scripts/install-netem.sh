#!/usr/bin/env bash
# Installs iptables, which the coordination partition test (internal/consultest StartPartitionable)
# uses to drop traffic between Consul servers bound to 127.0.0.11-13. Idempotent: returns at once
# when iptables is present. Needs root (the test itself needs CAP_NET_ADMIN).
set -euo pipefail
if command -v iptables >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-netem: iptables is missing and this is not root; run as root: apt-get install -y iptables" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends iptables >/dev/null
command -v iptables >/dev/null
