#!/usr/bin/env bash
# Installs the OpenTelemetry Collector that the telemetry integration tests export to, assembled from the
# Go module proxy with the collector's own builder (ARCHITECTURE §11) from scripts/otelcol/manifest.yaml.
#
# About two minutes cold; idempotent: when $OTELCOL_BIN already reports the wanted version and was built
# from the current manifest it exits at once. The binary lands in $(go env GOPATH)/bin/otelcol-chassis.
set -euo pipefail

VERSION="${OTELCOL_VERSION:-0.165.0}"
BIN_DIR="${OTELCOL_BIN_DIR:-$(go env GOPATH)/bin}"
BIN="$BIN_DIR/otelcol-chassis"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
manifest="$here/otelcol/manifest.yaml"
stamp="$BIN_DIR/.otelcol-chassis.manifest.sha256"
sum=$(sha256sum "$manifest" | cut -d' ' -f1)

if [ -x "$BIN" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ] \
  && grep -q "version ${VERSION}\$" <<<"$("$BIN" --version 2>/dev/null || true)"; then
  echo "otelcol-chassis ${VERSION} already at $BIN"
  exit 0
fi

builder="$BIN_DIR/builder"
# grep reads captured output, not a pipe: with pipefail, grep -q exiting at the first match would
# kill the writer with SIGPIPE and fail the check at random.
if ! [ -x "$builder" ] || ! grep -q "${VERSION}" <<<"$("$builder" version 2>/dev/null || true)"; then
  echo "installing the collector builder v${VERSION}..." >&2
  GOBIN="$BIN_DIR" GOFLAGS=-mod=mod go install "go.opentelemetry.io/collector/cmd/builder@v${VERSION}"
fi

echo "building otelcol-chassis ${VERSION} (about two minutes the first time)..." >&2
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
sed "s|output_path: ./_build|output_path: $work/_build|" "$manifest" >"$work/manifest.yaml"
mkdir -p "$BIN_DIR"
(cd "$work" && GOFLAGS=-mod=mod CGO_ENABLED=0 "$builder" --config "$work/manifest.yaml" >"$work/build.log" 2>&1) || {
  tail -50 "$work/build.log" >&2
  exit 1
}
mv "$work/_build/otelcol-chassis" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "$sum" >"$stamp"
"$BIN" --version
