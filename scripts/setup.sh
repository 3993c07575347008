#!/usr/bin/env bash
# Installs what building and testing need beyond the Rust toolchain, when missing:
#   protoc (gRPC code generation), etcd and MariaDB (cluster tests), Chromium and chromedriver,
#   Firefox ESR (the dashboard's browser tests), from Debian's packages; geckodriver (Firefox's
#   WebDriver server, not packaged by Debian) built from crates.io with cargo.
# The tests start their own etcd and MariaDB servers on free loopback ports.
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail

# The Debian packages of what is missing, in `missing`.
check() {
  missing=()
  command -v protoc >/dev/null || missing+=(protobuf-compiler)
  command -v etcd >/dev/null || [ -x /usr/bin/etcd ] || missing+=(etcd-server)
  [ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null || missing+=(mariadb-server)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  [ -x /usr/bin/firefox-esr ] || missing+=(firefox-esr)
}
check
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packages may start system services on the default ports; the tests start their own.
  for svc in etcd mariadb; do
    $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || $sudo service "$svc" stop >/dev/null 2>&1 || true
  done
fi
# About a minute and a half of building, once per machine.
GECKODRIVER_VERSION=0.37.1
if ! command -v geckodriver >/dev/null; then
  echo "setup: building geckodriver $GECKODRIVER_VERSION from crates.io" >&2
  cargo install --quiet --locked geckodriver --version "$GECKODRIVER_VERSION"
fi
check
command -v geckodriver >/dev/null || missing+=(geckodriver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: still missing after installing: ${missing[*]}" >&2
  exit 1
fi
