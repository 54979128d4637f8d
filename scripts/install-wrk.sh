#!/usr/bin/env bash
# Installs the tools of the TCP benchmark (`make bench-tcp`, bench/tcp): wrk, the HTTP load generator,
# and util-linux's taskset, which pins the servers and wrk to separate cores. strace and linux-perf
# are optional (the profiling notes of BENCHMARKS.md use them) and installed with -with-profilers.
# Idempotent: returns at once when the tools are present. Needs root for apt-get.
set -euo pipefail
pkgs=()
command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
command -v taskset >/dev/null 2>&1 || pkgs+=(util-linux)
if [ "${1:-}" = "-with-profilers" ]; then
  command -v strace >/dev/null 2>&1 || pkgs+=(strace)
  command -v perf >/dev/null 2>&1 || pkgs+=(linux-perf)
fi
if [ ${#pkgs[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-wrk: missing ${pkgs[*]} and this is not root; run as root: apt-get install -y ${pkgs[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
command -v wrk >/dev/null
command -v taskset >/dev/null
