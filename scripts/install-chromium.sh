#!/usr/bin/env bash
# Installs headless Chromium for the demo dashboard's browser test (examples/cluster): the Debian
# packages `chromium` and `chromium-driver`. Idempotent and quick when both are present: it exits at
# once. apt-get update runs only when the package index is missing or older than a day.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "chromium already at $(command -v chromium)"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "installing the Debian chromium and chromium-driver packages..." >&2
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
  $sudo apt-get update -qq
fi
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
command -v chromium
chromium --version 2>/dev/null | head -1 || true
