#!/usr/bin/env bash
# Installs what `make proto` needs to regenerate the project's gRPC code, all from the Go module
# proxy (no protoc binary, no download site): buf (a protobuf compiler and driver written in Go) and
# the two Go plugins, protoc-gen-go and protoc-gen-go-grpc, at pinned versions so that regenerating
# on another machine gives the same files (their versions are written into each generated file).
#
# Not part of `make test`: the generated code is committed, and buf takes minutes to build cold.
# Idempotent: instant when each tool is at its pinned version.
set -euo pipefail

BUF_VERSION="${BUF_VERSION:-v1.75.0}"
PROTOC_GEN_GO_VERSION="${PROTOC_GEN_GO_VERSION:-v1.36.12}"
PROTOC_GEN_GO_GRPC_VERSION="${PROTOC_GEN_GO_GRPC_VERSION:-v1.6.2}"
BIN_DIR="$(go env GOPATH)/bin"

# has BIN VERSION: the binary exists and its build info names the module version.
has() {
  [ -x "$BIN_DIR/$1" ] || return 1
  local info
  info=$(go version -m "$BIN_DIR/$1" 2>/dev/null || true)
  grep -q "[[:space:]]mod[[:space:]].*[[:space:]]$2[[:space:]]" <<<"$info"
}

install() { # install BIN MODULE_PATH VERSION
  if has "$1" "$3"; then return; fi
  echo "installing $1 $3 (buf takes a few minutes cold)..." >&2
  (cd /tmp && GOBIN="$BIN_DIR" go install "$2@$3")
}

install buf github.com/bufbuild/buf/cmd/buf "$BUF_VERSION"
install protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
install protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"
echo "$BIN_DIR"
