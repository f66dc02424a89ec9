#!/usr/bin/env bash
# A five-minute hostile-fleet soak (not part of CI: it takes minutes and both cores): starts a
# release server on loopback with a 2 s header timeout, runs examples/soak.rs against it, and
# prints the server's resident memory over time. Usage: scripts/soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
cargo build --release --locked --bin opamp-gitops --example soak
target="${CARGO_TARGET_DIR:-target}/release"
log="$(mktemp)"
"$target/opamp-gitops" serve --repo example-config-repo \
  --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --header-timeout 2s \
  --cache-dir "$(mktemp -d)" 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q "listening opamp=" "$log" && break; sleep 0.1; done
opamp=$(sed -n 's/.*listening opamp=\([^ ]*\) admin=\([^ ]*\).*/\1/p' "$log" | head -1)
admin=$(sed -n 's/.*listening opamp=\([^ ]*\) admin=\([^ ]*\).*/\2/p' "$log" | head -1)
echo "server pid $server opamp=$opamp admin=$admin; soak for ${seconds}s"
"$target/examples/soak" "$opamp" "$admin" "$server" "$seconds"
