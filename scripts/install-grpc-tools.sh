#!/usr/bin/env bash
# Installs the gRPC clients the tests use to check the gRPC server from outside (no code of ours in
# them), from the Go module proxy into $(go env GOPATH)/bin:
#   grpc-health-probe  github.com/grpc-ecosystem/grpc-health-probe  (the grpc.health.v1 client
#                      Kubernetes users run; exit 0 SERVING, 2 connection failure, 3 RPC failure,
#                      4 NOT_SERVING)
#   grpcurl            github.com/fullstorydev/grpcurl/cmd/grpcurl (only when the proxy serves it;
#                      a failure to install it is reported and does not fail the script)
# Idempotent: returns at once when the binaries are present at the wanted versions.
set -euo pipefail

HEALTH_PROBE_VERSION="${HEALTH_PROBE_VERSION:-v0.4.63}"
GRPCURL_VERSION="${GRPCURL_VERSION:-latest}"
BIN_DIR="$(go env GOPATH)/bin"

# go version -m prints "mod <module> <version> <sum>" for the binary's main module; read captured
# output, not a pipe (a grep -q that exits first would kill the writer with SIGPIPE under pipefail).
have_version() {
  local bin=$1 module=$2 want=$3 info
  [ -x "$bin" ] || return 1
  info=$(go version -m "$bin" 2>/dev/null || true)
  if [ "$want" = latest ]; then
    grep -q "mod[[:space:]]*${module}[[:space:]]" <<<"$info"
  else
    grep -q "mod[[:space:]]*${module}[[:space:]]*${want}[[:space:]]" <<<"$info"
  fi
}

if have_version "$BIN_DIR/grpc-health-probe" github.com/grpc-ecosystem/grpc-health-probe "$HEALTH_PROBE_VERSION"; then
  echo "grpc-health-probe already at $BIN_DIR/grpc-health-probe"
else
  echo "installing grpc-health-probe ${HEALTH_PROBE_VERSION}..." >&2
  GOBIN="$BIN_DIR" go install "github.com/grpc-ecosystem/grpc-health-probe@${HEALTH_PROBE_VERSION}"
  echo "grpc-health-probe installed at $BIN_DIR/grpc-health-probe"
fi

if have_version "$BIN_DIR/grpcurl" github.com/fullstorydev/grpcurl "$GRPCURL_VERSION"; then
  echo "grpcurl already at $BIN_DIR/grpcurl"
elif GOBIN="$BIN_DIR" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@${GRPCURL_VERSION}"; then
  echo "grpcurl installed at $BIN_DIR/grpcurl"
else
  echo "grpcurl: the module proxy did not serve github.com/fullstorydev/grpcurl@${GRPCURL_VERSION}; skipped (tests that use it skip too)" >&2
fi
