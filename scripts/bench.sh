#!/usr/bin/env bash
# Scale benchmarks (issue 22): the floor (benches/floor.rs), the opamp-go peer (benches/peer)
# and opamp-gitops, one after the other on loopback, each measured by the same
# `opamp-gitops loadgen`. Not part of CI: it needs minutes and the whole machine.
#
# Usage: scripts/bench.sh [--agents N] [--http-agents N] [--heartbeat D] [--poll-interval D]
#                         [--window S] [--only floor,peer,ours] [--out DIR] [--full]
#   --agents N         WebSocket agents (default 2000; at most 19000: one process's open files)
#   --http-agents N    plain-HTTP pollers (default: --agents)
#   --heartbeat D      WebSocket heartbeat interval (default 5s; 30s with --full)
#   --poll-interval D  HTTP poll interval (default 5s; 30s with --full)
#   --window S         seconds of each steady-state CPU measurement (default 15; 60 with --full)
#   --only LIST        which servers to run (default floor,peer,ours)
#   --out DIR          where the logs and loadgen JSON lines go (default: a new temp dir)
#   --full             the issue's scale: 19000 WebSocket agents, 100000 HTTP pollers, 30s
#
# Per server, two runs:
#   WebSocket: RSS with 0 and N agents (after each sent its full state and received a config and
#     a refreshed one) -> KiB per agent; time until all connected; a revision change (the
#     server's POST /api/refresh on a commit that changes every agent's config; the floor's and
#     the peer's POST /push) -> time until 50/90/99/100 % report APPLIED for the new hash;
#     server CPU over a window of heartbeats; then a restart of the server on the same ports ->
#     time until every agent is back, configs pushed (loadgen's count and the server's own) and
#     full-state requests.
#   HTTP: N pollers -> request latency p50/p99 after the fleet settled, and server CPU.
# The last lines printed are a Markdown table of the figures with the ratios to the floor and
# to the peer. Every server binds 127.0.0.1, every agent 127.x source addresses; the script
# stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

AGENTS=2000
HTTP_AGENTS=""
HEARTBEAT=""
POLL=""
WINDOW=""
ONLY="floor,peer,ours"
OUT=""
FULL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --agents) AGENTS="$2"; shift 2 ;;
    --http-agents) HTTP_AGENTS="$2"; shift 2 ;;
    --heartbeat) HEARTBEAT="$2"; shift 2 ;;
    --poll-interval) POLL="$2"; shift 2 ;;
    --window) WINDOW="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --full) FULL=1; shift ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
if [ "$FULL" = 1 ]; then
  AGENTS=19000
  HTTP_AGENTS="${HTTP_AGENTS:-100000}"
  HEARTBEAT="${HEARTBEAT:-30s}"
  POLL="${POLL:-30s}"
  WINDOW="${WINDOW:-60}"
fi
HTTP_AGENTS="${HTTP_AGENTS:-$AGENTS}"
HEARTBEAT="${HEARTBEAT:-5s}"
POLL="${POLL:-5s}"
WINDOW="${WINDOW:-15}"
[ "$AGENTS" -ge 1 ] && [ "$AGENTS" -le 19000 ] || die "--agents must be 1 to 19000 (one server process holds at most about 19,900 open files)"
[ "$HTTP_AGENTS" -ge 1 ] && [ "$HTTP_AGENTS" -le 200000 ] || die "--http-agents must be 1 to 200000"
[ "$WINDOW" -ge 1 ] && [ "$WINDOW" -le 600 ] || die "--window must be 1 to 600 seconds"
for tool in python3 git curl go; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is needed"
done
HEARTBEAT_S="$(secs_of "$HEARTBEAT")"
POLL_S="$(secs_of "$POLL")"
# Bounds for each wait, and each loadgen run (it is stopped earlier when its figures are in).
WAIT=$(( 60 + AGENTS / 100 + HTTP_AGENTS / 1000 ))
WS_DURATION=$(( WINDOW + WAIT * 2 + 30 ))
HTTP_DURATION=$(( WINDOW + ${POLL_S%.*} * 2 + WAIT ))

OUT="${OUT:-$(mktemp -d /tmp/opamp-gitops-bench.XXXXXX)}"
mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"
: > "$RESULTS"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/opamp-gitops/target}"


# ---- build ----
say "building release binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
nice -n 10 cargo build --release --locked --bin opamp-gitops >&2
FLOOR="$(nice -n 10 cargo build --release --locked --bench floor --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "floor" and m.get("executable"):
        print(m["executable"])')"
[ -x "$FLOOR" ] || die "the floor binary was not built"
BIN="$CARGO_TARGET_DIR/release/opamp-gitops"

build_peer() { # the opamp-go peer, from the Go module proxy, cached by its sources
  local dir="$ROOT/benches/peer" key cache
  export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0
  key="$( { go env GOVERSION; cat "$dir/go.mod" "$dir/go.sum" "$dir"/*.go; } | sha256sum | cut -c1-20)"
  cache="${HOME}/.cache/opamp-gitops/bench-peer/$key"
  if [ ! -x "$cache/peer" ]; then
    say "building benches/peer with $(go env GOVERSION)"
    mkdir -p "$cache"
    (cd "$dir" && nice -n 10 go build -mod=readonly -trimpath -ldflags='-s -w' -o "$cache/peer.tmp" .) >&2
    mv "$cache/peer.tmp" "$cache/peer"
  fi
  echo "$cache/peer"
}
PEER="$(build_peer)"

# ---- the config repository ours serves: a commit that changes every agent's config ----
REPO="$OUT/repo"
rm -rf "$REPO" && mkdir -p "$REPO"
cp -r "$ROOT/example-config-repo" "$REPO/work"
git_() { git -C "$REPO/work" -c user.name=bench -c user.email=bench@localhost "$@"; }
git_ init -q -b main
git_ add -A
git_ commit -qm "bench: initial"
git clone -q --bare "$REPO/work" "$REPO/remote.git"
echo "bench:bench-admin-token" > "$REPO/admin.tokens"
sed -i 's/queue_size: 5000/queue_size: 5001/' "$REPO/work/fleet.yaml"
(cd "$REPO/work" && "$BIN" check --update . >/dev/null 2>&1)
git_ commit -qam "bench: every agent's queue size"
git_ push -q "$REPO/remote.git" HEAD:main
ATTRS=(--attr environment=production,staging --attr region=us-east-1,eu-west-1)
# The floor and the peer push a config of the size ours renders for these agents.
CONFIG_BYTES="$("$BIN" render "$REPO/work" --attr environment=production --attr region=us-east-1 | sed '1,/^--- /d' | wc -c)"
say "config size: $CONFIG_BYTES bytes; results in $OUT"

# ---- servers ----
SPID=""
OPAMP_PORT=""
ADMIN_PORT=""
start_server() { # TARGET GENERATION RUN: starts one server on the ports chosen for it
  local target="$1" generation="$2" run="$3" log="$OUT/$1-$3-server.log"
  case "$target" in
    floor)
      start_bg "$log" "$FLOOR" --listen "127.0.0.1:$OPAMP_PORT" --config-bytes "$CONFIG_BYTES"
      SPID="$LAST_PID"
      wait_line "$log" '"listening"' 30 >/dev/null || die "the floor did not start (see $log)" ;;
    peer)
      start_bg "$log" "$PEER" -listen "127.0.0.1:$OPAMP_PORT" -config-bytes "$CONFIG_BYTES" -generation "$generation"
      SPID="$LAST_PID"
      wait_line "$log" '"listening"' 30 >/dev/null || die "the peer did not start (see $log)" ;;
    ours)
      start_bg "$log" "$BIN" serve --repo "file://$REPO/remote.git" --poll-interval 1h \
        --admin-token-file "$REPO/admin.tokens" --cache-dir "$OUT/cache-$run" \
        --listen "127.0.0.1:$OPAMP_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
        --max-connections 20000 --heartbeat-interval "$HEARTBEAT"
      SPID="$LAST_PID"
      wait_line "$log" 'listening opamp=' 60 >/dev/null || die "opamp-gitops did not start (see $log)"
      local i
      for i in $(seq 1 150); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz")" = 200 ] && break
        sleep 0.2
      done ;;
  esac
}
refresh_args() {
  case "$1" in
    floor|peer) echo "--refresh http://127.0.0.1:$OPAMP_PORT/push" ;;
    ours) echo "--refresh http://127.0.0.1:$ADMIN_PORT/api/refresh --admin-token-file $REPO/admin.tokens" ;;
  esac
}
server_counts() { # TARGET: "pushes full_state_requests" as the server counts them
  case "$1" in
    floor) curl -s "http://127.0.0.1:$OPAMP_PORT/stats" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["pushes"], 0)' ;;
    peer) curl -s "http://127.0.0.1:$OPAMP_PORT/stats" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["pushes"], d["full_state_requests"])' ;;
    ours) curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^opamp_gitops_config_pushes_total /{p=$2} /^opamp_gitops_full_state_requests_total /{f=$2} END{print p+0, f+0}' ;;
  esac
}

ws_run() { # TARGET SUBNET
  local target="$1" subnet="$2" lg="$OUT/$1-ws.jsonl"
  OPAMP_PORT="$(free_port)"; ADMIN_PORT="$(free_port)"
  if [ "$target" = ours ]; then
    git -C "$REPO/remote.git" update-ref refs/heads/main "$(git_ rev-parse HEAD~1)"
  fi
  say "[$target] WebSocket: $AGENTS agents, heartbeat $HEARTBEAT"
  start_server "$target" 0 ws
  sleep 1
  local rss0 slab0 rss1 slab1
  rss0="$(rss_kib "$SPID")"; slab0="$(slab_kib)"
  if [ "$target" = ours ]; then
    # The new commit reaches the server only with the refresh loadgen posts.
    git -C "$REPO/remote.git" update-ref refs/heads/main "$(git_ rev-parse HEAD)"
  fi
  # shellcheck disable=SC2046 # refresh_args is a list of words
  start_bg "$lg" "$BIN" loadgen --endpoint "ws://127.0.0.1:$OPAMP_PORT" \
    --agents "$AGENTS" --heartbeat "$HEARTBEAT" --duration "${WS_DURATION}s" "${ATTRS[@]}" \
    --source-subnet "$subnet" $(refresh_args "$target") --json
  local lgpid="$LAST_PID" line
  if line="$(wait_event "$lg" all_connected "$WAIT")"; then
    record "$target" all_connected_s "$(python3 -c "print($(field "$line" after_ms)/1000)")"
  fi
  if line="$(wait_event "$lg" converged "$WAIT")"; then
    for p in p50 p90 p99 p100; do record "$target" "converge_${p}_ms" "$(field "$line" "${p}_ms")"; done
  else
    say "[$target] the agents did not all converge within ${WAIT}s"
  fi
  sleep 3
  rss1="$(rss_kib "$SPID")"; slab1="$(slab_kib)"
  record "$target" rss_idle_mib "$(python3 -c "print(round($rss0/1024, 1))")"
  record "$target" rss_agents_mib "$(python3 -c "print(round($rss1/1024, 1))")"
  record "$target" kib_per_agent "$(python3 -c "print(round(($rss1-$rss0)/$AGENTS, 2))")"
  record "$target" slab_kib_per_agent "$(python3 -c "print(round(($slab1-$slab0)/$AGENTS, 2))")"
  local c0 c1 t0 t1
  c0="$(cpu_ticks "$SPID")"; t0="$(now)"
  sleep "$WINDOW"
  c1="$(cpu_ticks "$SPID")"; t1="$(now)"
  record "$target" heartbeat_cpu_pct "$(python3 -c "print(round(100*($c1-$c0)/$CLK_TCK/($t1-$t0), 2))")"
  record "$target" cpu_us_per_heartbeat "$(python3 -c "print(round(1e6*($c1-$c0)/$CLK_TCK/(($t1-$t0)*$AGENTS/$HEARTBEAT_S), 1))")"

  say "[$target] restart"
  stop_pid "$SPID"
  start_server "$target" 1 ws
  record_back "$target" reconnect_all "$lg" "$WAIT"
  local counts
  counts="$(server_counts "$target")"
  record "$target" reconnect_server_pushes "${counts% *}"
  record "$target" reconnect_server_full_states "${counts#* }"
  stop_pid "$lgpid"
  stop_pid "$SPID"
}

http_run() { # TARGET SUBNET
  local target="$1" subnet="$2" lg="$OUT/$1-http.jsonl"
  OPAMP_PORT="$(free_port)"; ADMIN_PORT="$(free_port)"
  say "[$target] HTTP: $HTTP_AGENTS pollers every $POLL"
  if [ "$target" = ours ]; then
    git -C "$REPO/remote.git" update-ref refs/heads/main "$(git_ rev-parse HEAD)"
  fi
  start_server "$target" 1 http
  start_bg "$lg" "$BIN" loadgen --endpoint "http://127.0.0.1:$OPAMP_PORT" --transport http \
    --agents "$HTTP_AGENTS" --poll-interval "$POLL" --duration "${HTTP_DURATION}s" "${ATTRS[@]}" \
    --source-subnet "$subnet" --json
  local lgpid="$LAST_PID" line c0 c1 t0 t1
  if wait_event "$lg" settled "$WAIT" >/dev/null; then
    sleep "$POLL_S"
    c0="$(cpu_ticks "$SPID")"; t0="$(now)"
    sleep "$WINDOW"
    c1="$(cpu_ticks "$SPID")"; t1="$(now)"
    record "$target" http_cpu_pct "$(python3 -c "print(round(100*($c1-$c0)/$CLK_TCK/($t1-$t0), 2))")"
  else
    say "[$target] the pollers did not settle within ${WAIT}s"
  fi
  stop_pid "$lgpid"
  if line="$(wait_event "$lg" report 10)"; then
    record "$target" http_p50_ms "$(field "$line" http_latency_settled p50_ms)"
    record "$target" http_p99_ms "$(field "$line" http_latency_settled p99_ms)"
    record "$target" http_requests "$(field "$line" http_latency_settled requests)"
  fi
  stop_pid "$SPID"
}

k=0
for target in floor peer ours; do
  case ",$ONLY," in *",$target,"*) ;; *) continue ;; esac
  # A block of source addresses per run: no run meets the TIME_WAIT sockets of another.
  ws_run "$target" "127.$(( 10 + k )).0.0/16"
  http_run "$target" "127.$(( 20 + k )).0.0/16"
  k=$(( k + 1 ))
done

# ---- the table ----
say "machine: $(nproc) cores, $(uname -r), open files $(ulimit -Hn); commit $(git -C "$ROOT" rev-parse --short HEAD); $(date -u +%Y-%m-%d)"
python3 - "$RESULTS" "$AGENTS" "$HTTP_AGENTS" "$HEARTBEAT" "$POLL" <<'EOF'
import sys
from collections import defaultdict
results, agents, http_agents, heartbeat, poll = sys.argv[1:]
values = defaultdict(dict)
for line in open(results):
    target, key, value = line.rstrip("\n").split("\t")
    values[key][target] = value
rows = [
    ("rss_idle_mib", "server RSS, 0 agents (MiB)"),
    ("rss_agents_mib", f"server RSS, {agents} WS agents (MiB)"),
    ("kib_per_agent", "server RSS per WS agent (KiB)"),
    ("slab_kib_per_agent", "kernel slab per WS agent, whole machine (KiB)"),
    ("all_connected_s", f"{agents} WS agents connected (s)"),
    ("converge_p50_ms", "revision -> 50 % APPLIED (ms)"),
    ("converge_p90_ms", "revision -> 90 % APPLIED (ms)"),
    ("converge_p99_ms", "revision -> 99 % APPLIED (ms)"),
    ("converge_p100_ms", "revision -> 100 % APPLIED (ms)"),
    ("heartbeat_cpu_pct", f"server CPU, {agents} WS agents heartbeating every {heartbeat} (% of a core)"),
    ("cpu_us_per_heartbeat", "server CPU per heartbeat (µs)"),
    ("reconnect_all_back_s", "restart -> all agents back (s)"),
    ("reconnect_all_configs_received", "configs pushed after the restart (loadgen count)"),
    ("reconnect_server_pushes", "configs pushed after the restart (server count)"),
    ("reconnect_all_full_state_requests", "ReportFullState requests after the restart (loadgen count)"),
    ("reconnect_server_full_states", "ReportFullState requests after the restart (server count)"),
    ("http_p50_ms", f"HTTP poll p50, {http_agents} pollers every {poll} (ms)"),
    ("http_p99_ms", f"HTTP poll p99, {http_agents} pollers every {poll} (ms)"),
    ("http_cpu_pct", f"server CPU, {http_agents} HTTP pollers (% of a core)"),
]
def ratio(a, b):
    try:
        a, b = float(a), float(b)
        return f"{a / b:.2f}" if b else "-"
    except (TypeError, ValueError):
        return "-"
print("| figure | floor | peer | ours | ours / floor | ours / peer |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for key, name in rows:
    v = values.get(key, {})
    f, p, o = (v.get(t, "-") for t in ("floor", "peer", "ours"))
    print(f"| {name} | {f} | {p} | {o} | {ratio(o, f)} | {ratio(o, p)} |")
EOF
