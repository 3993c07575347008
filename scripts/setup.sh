#!/usr/bin/env bash
# Installs what building and testing need beyond the Rust toolchain, when missing:
#   protoc (gRPC code generation) and etcd (cluster tests), from Debian's packages.
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail

missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v etcd >/dev/null || [ -x /usr/bin/etcd ] || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  # The package starts a system etcd on the default ports; the tests start their own.
  if [[ " ${missing[*]} " == *" etcd-server "* ]]; then
    $sudo systemctl disable --now etcd >/dev/null 2>&1 || $sudo service etcd stop >/dev/null 2>&1 || true
  fi
fi
command -v protoc >/dev/null && command -v etcd >/dev/null
