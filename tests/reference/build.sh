#!/usr/bin/env bash
# Builds the reference OpAMP peers used by the integration tests:
#   opampgo-agent    (tests/reference/opampgo-agent, opamp-go client test agent)
#   otelcol-e2e      (tests/reference/collector, ocb-generated Collector distribution)
#   opampsupervisor  (tests/reference/supervisor, the contrib OpAMP Supervisor)
#
# Usage: tests/reference/build.sh [all|opampgo-agent|collector|supervisor]...
#
# Binaries go to ${OPAMP_GITOPS_REFERENCE_CACHE:-$HOME/.cache/opamp-gitops/reference}/<key>/bin/
# where <key> is a sha256 over the go.mod, go.sum and .go files of the built
# modules (plus this script, the target list and the Go version), so a warm run
# builds nothing and any change builds anew. Progress goes to stderr; the LAST
# line of stdout is the absolute bin directory. Needs only Go (>= 1.25) and the
# Go module proxy; go.sum pins every module (-mod=readonly).
set -euo pipefail

die() { echo "build.sh: error: $*" >&2; exit 1; }
say() { echo "build.sh: $*" >&2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# ---- targets ----
targets=()
[ $# -eq 0 ] && set -- all
for arg in "$@"; do
  case "$arg" in
    all) targets+=(opampgo-agent collector supervisor) ;;
    opampgo-agent|collector|supervisor) targets+=("$arg") ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown target '$arg' (expected all, opampgo-agent, collector or supervisor)" ;;
  esac
done
# de-duplicate, keep a fixed order
ordered=()
for t in opampgo-agent collector supervisor; do
  for u in "${targets[@]}"; do
    if [ "$t" = "$u" ]; then ordered+=("$t"); break; fi
  done
done
targets=("${ordered[@]}")

binary_of() {
  case "$1" in
    opampgo-agent) echo opampgo-agent ;;
    collector) echo otelcol-e2e ;;
    supervisor) echo opampsupervisor ;;
  esac
}

# ---- toolchain ----
command -v go >/dev/null 2>&1 || die "go not found in PATH (Go >= 1.25 is needed)"
# Never let the go command fetch another toolchain behind our back.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
go_version="$(go env GOVERSION 2>/dev/null)" || die "cannot run 'go env GOVERSION'"
minor="$(printf '%s' "$go_version" | sed -n 's/^go1\.\([0-9][0-9]*\).*/\1/p')"
if [ -z "$minor" ] || [ "$minor" -lt 25 ]; then
  die "these modules need Go >= 1.25 (go.mod says 'go 1.25.0'), found '$go_version'"
fi
export CGO_ENABLED=0

# ---- cache key ----
sha256() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -d' ' -f1
  else shasum -a 256 | cut -d' ' -f1; fi
}
for t in "${targets[@]}"; do
  [ -f "$here/$t/go.mod" ] || die "missing $here/$t/go.mod"
  [ -f "$here/$t/go.sum" ] || die "missing $here/$t/go.sum"
done
key="$(
  {
    echo "targets: ${targets[*]}"
    echo "go: $go_version $(go env GOOS)/$(go env GOARCH)"
    echo "script:"; cat "${BASH_SOURCE[0]}"
    for t in "${targets[@]}"; do
      dir="$here/$t"
      # file list in a fixed order, each file framed by its name
      (cd "$dir" && find . -maxdepth 1 -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) | LC_ALL=C sort) |
        while IFS= read -r f; do
          echo "== $t/${f#./}"
          cat "$dir/$f"
        done
    done
  } | sha256
)"
key="${key:0:20}"

cache_root="${OPAMP_GITOPS_REFERENCE_CACHE:-${HOME:?HOME is not set}/.cache/opamp-gitops/reference}"
mkdir -p "$cache_root" || die "cannot create cache directory $cache_root"
cache_root="$(cd "$cache_root" && pwd)"
out="$cache_root/$key"
bin="$out/bin"

complete() {
  [ -f "$out/.complete" ] || return 1
  for t in "${targets[@]}"; do
    [ -x "$bin/$(binary_of "$t")" ] || return 1
  done
}

if complete; then
  say "up to date: $bin"
  echo "$bin"
  exit 0
fi

# ---- build (serialised across concurrent callers) ----
lock="$cache_root/.lock-$key"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$lock"
  if ! flock -n 9; then
    say "another build of $key is running; waiting (up to 30 min)"
    flock -w 1800 9 || die "timed out waiting for $lock"
  fi
  if complete; then
    say "up to date (built by another process): $bin"
    echo "$bin"
    exit 0
  fi
fi

nice_cmd=()
command -v nice >/dev/null 2>&1 && nice_cmd=(nice -n 10)

tmp="$(mktemp -d "$cache_root/.build-$key.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
mkdir -p "$tmp/bin"

say "building ${targets[*]} with $go_version into $out"
for t in "${targets[@]}"; do
  name="$(binary_of "$t")"
  say "[$t] go build -> $name ..."
  start=$(date +%s)
  if ! (cd "$here/$t" && "${nice_cmd[@]}" go build -mod=readonly -trimpath -buildvcs=false \
          -ldflags='-s -w' -o "$tmp/bin/$name" .) >&2; then
    die "[$t] go build failed (see the output above)"
  fi
  say "[$t] done in $(( $(date +%s) - start ))s"
done

date -u +%Y-%m-%dT%H:%M:%SZ > "$tmp/.complete"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
say "built: $bin"
echo "$bin"
