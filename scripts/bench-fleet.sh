#!/usr/bin/env bash
# Fleet benchmarks (issue 22) of what only opamp-gitops has: the fleet store, several replicas
# sharing PostgreSQL, `diff` against a live fleet, and a staged rollout. Each is measured with
# `opamp-gitops loadgen`; the floor and the opamp-go peer have none of these (scripts/bench.sh
# compares the three on what they share). Not part of CI: it needs minutes and the whole machine.
#
# Usage: scripts/bench-fleet.sh [--only store,replicas,diff,rollout] [--agents N]
#                               [--replica-agents N] [--replicas N] [--window S] [--out DIR]
#   --only LIST          which benchmarks to run (default: all four)
#   --agents N           WebSocket agents for store and rollout (default 19000, at most 19000)
#   --replica-agents N   WebSocket agents spread over the replicas (default 100000)
#   --replicas N         serve processes sharing one PostgreSQL (default 6)
#   --window S           seconds of each steady-state CPU measurement (default 60)
#   --out DIR            where the logs and loadgen JSON lines go (default: a new temp dir)
#
#   store:    per store (memory, the default SQLite, PostgreSQL): N agents heartbeating every 30 s
#             -> server CPU and agent rows written per second (store_agent_writes_total); then a
#             restart on the same store -> time until all are back, configs pushed and
#             ReportFullState requests.
#   replicas: PostgreSQL and --replicas serve processes; --replica-agents agents spread over them
#             (loadgen's several --endpoint, as a Kubernetes Service would) -> time until all
#             connected, a refresh posted to the first replica (the others hear of the commit
#             through NOTIFY) -> 50/90/99/100 % APPLIED; then on the last replica the latency of
#             GET /api/summary and of a filtered, sorted, paginated GET /api/agents (20 each).
#   diff:     10,000 agents over 500 attribute combinations, a repository of 50 rules; a working
#             tree change that touches every agent -> wall time of `opamp-gitops diff --fleet`.
#   rollout:  N agents; a commit that changes every config, once without and once with
#             `rollout: {waves: [1, 10, 100], soak: 0s}` -> time until 100 % APPLIED and the
#             server CPU seconds from the refresh to the last APPLIED.
# The last lines printed are a Markdown table. Every server binds 127.0.0.1, every agent 127.x
# source addresses; the script stops only the processes (and the PostgreSQL cluster) it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"

ONLY="store,replicas,diff,rollout"
AGENTS=19000
REPLICA_AGENTS=100000
REPLICAS=6
WINDOW=60
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --only) ONLY="$2"; shift 2 ;;
    --agents) AGENTS="$2"; shift 2 ;;
    --replica-agents) REPLICA_AGENTS="$2"; shift 2 ;;
    --replicas) REPLICAS="$2"; shift 2 ;;
    --window) WINDOW="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ "$AGENTS" -ge 1 ] && [ "$AGENTS" -le 19000 ] || die "--agents must be 1 to 19000"
[ "$REPLICAS" -ge 1 ] && [ "$REPLICAS" -le 8 ] || die "--replicas must be 1 to 8"
[ "$REPLICA_AGENTS" -ge 1 ] && [ "$REPLICA_AGENTS" -le $(( REPLICAS * 19000 )) ] \
  || die "--replica-agents must be 1 to 19000 per replica"
[ "$WINDOW" -ge 1 ] && [ "$WINDOW" -le 600 ] || die "--window must be 1 to 600 seconds"
for tool in python3 git curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is needed"
done
HEARTBEAT=30s
WAIT=$(( 60 + AGENTS / 100 ))
REPLICA_WAIT=$(( 120 + REPLICA_AGENTS / 200 ))

OUT="${OUT:-$(mktemp -d /tmp/opamp-gitops-bench-fleet.XXXXXX)}"
mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"
: > "$RESULTS"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/opamp-gitops/target}"

PG_DIR=""
stop_postgres() {
  if [ -n "$PG_DIR" ]; then
    "$ROOT/scripts/postgres.sh" stop "$PG_DIR" || true
    PG_DIR=""
  fi
}
start_postgres() { # sets PG_URL: a fresh cluster for each benchmark
  stop_postgres
  local line
  line="$("$ROOT/scripts/postgres.sh" start)"
  PG_DIR="${line%% *}"
  PG_URL="${line#* }"
}
trap 'cleanup; stop_postgres' EXIT

say "building the release binary (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
nice -n 10 cargo build --release --locked --bin opamp-gitops >&2
BIN="$CARGO_TARGET_DIR/release/opamp-gitops"
echo "bench:bench-admin-token" > "$OUT/admin.tokens"
AUTH=(-H "Authorization: Bearer bench-admin-token")
ATTRS=(--attr environment=production,staging --attr region=us-east-1,eu-west-1)

# ---- config repositories: a work tree and a bare remote whose main the servers fetch ----
# make_repo NAME [ROLLOUT]: the example repository, and a second commit that changes every
# agent's config; with ROLLOUT, fleet.yaml carries that rollout section in both commits.
make_repo() {
  local dir="$OUT/$1" rollout="${2:-}"
  rm -rf "$dir" && mkdir -p "$dir"
  cp -r "$ROOT/example-config-repo" "$dir/work"
  if [ -n "$rollout" ]; then
    printf '\nrollout: %s\n' "$rollout" >> "$dir/work/fleet.yaml"
  fi
  repo_commit "$dir" "bench: initial"
  git clone -q --bare "$dir/work" "$dir/remote.git"
  sed -i 's/queue_size: 5000/queue_size: 5001/' "$dir/work/fleet.yaml"
  repo_commit "$dir" "bench: every agent's queue size"
  git -C "$dir/work" push -q "$dir/remote.git" HEAD:main
}
repo_commit() { # DIR MESSAGE: updates expected/ and commits the work tree
  (cd "$1/work" && "$BIN" check --update . >/dev/null 2>&1) || die "check --update failed in $1"
  git -C "$1/work" -c user.name=bench -c user.email=bench@localhost init -q -b main
  git -C "$1/work" add -A
  git -C "$1/work" -c user.name=bench -c user.email=bench@localhost commit -qm "$2"
}
# point_main DIR REV: what the servers fetch next (HEAD~1: the first commit, HEAD: the change)
point_main() { git -C "$1/remote.git" update-ref refs/heads/main "$(git -C "$1/work" rev-parse "$2")"; }

# ---- ours ----
# serve NAME DIR OPAMP_PORT ADMIN_PORT [ARGS...]: starts a server and waits until it is ready;
# sets SPID. Its cache directory (and default SQLite store) is cache-NAME, or cache-$CACHE_NAME.
serve() {
  local name="$1" dir="$2" opamp="$3" admin="$4" log="$OUT/$1-server.log" i
  shift 4
  start_bg "$log" "$BIN" serve --repo "file://$dir/remote.git" --poll-interval 1h \
    --admin-token-file "$OUT/admin.tokens" --cache-dir "$OUT/cache-${CACHE_NAME:-$name}" \
    --listen "127.0.0.1:$opamp" --admin-listen "127.0.0.1:$admin" \
    --max-connections 20000 --heartbeat-interval "$HEARTBEAT" "$@"
  SPID="$LAST_PID"
  wait_line "$log" 'listening opamp=' 120 >/dev/null || die "$name did not start (see $log)"
  for i in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")" = 200 ] && return 0
    sleep 0.2
  done
  die "$name did not become ready (see $log)"
}
metric_of() { # ADMIN_PORT NAME: one counter of the server's /metrics (0 when absent)
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {v=$2} END {print v+0}'
}
refresh_url() { echo "http://127.0.0.1:$1/api/refresh"; }
cpu_pct() { python3 -c "print(round(100*($2-$1)/$CLK_TCK/($4-$3), 2))"; } # C0 C1 T0 T1
cpu_s() { python3 -c "print(round(($2-$1)/$CLK_TCK, 2))"; } # C0 C1
# latency NAME URL COUNT: records the median and the worst of COUNT GETs of URL (ms)
latency() {
  local name="$1" url="$2" count="$3" times=() i code
  for i in $(seq 1 "$count"); do
    code="$(curl -s -o "$OUT/latency-body.json" -w '%{http_code} %{time_total}' "$url")"
    [ "${code% *}" = 200 ] || die "GET $url answered ${code% *}"
    times+=("${code#* }")
  done
  record ours "${name}_p50_ms" "$(python3 -c 'import sys,statistics; print(round(1000*statistics.median(map(float,sys.argv[1:])),1))' "${times[@]}")"
  record ours "${name}_max_ms" "$(python3 -c 'import sys; print(round(1000*max(map(float,sys.argv[1:])),1))' "${times[@]}")"
}

# ---- store: CPU and writes per second with agents heartbeating, then a restart ----
store_run() { # KIND (memory|sqlite|postgres) SUBNET
  local kind="$1" subnet="$2" store=() opamp admin lg="$OUT/store-$1.jsonl"
  opamp="$(free_port)"; admin="$(free_port)"
  case "$kind" in
    memory) store=(--store memory) ;;
    sqlite) store=() ;;
    postgres) start_postgres; store=(--store "$PG_URL") ;;
  esac
  point_main "$OUT/plain" HEAD
  say "[store $kind] $AGENTS agents heartbeating every $HEARTBEAT"
  serve "store-$kind" "$OUT/plain" "$opamp" "$admin" "${store[@]}"
  start_bg "$lg" "$BIN" loadgen --endpoint "ws://127.0.0.1:$opamp" --agents "$AGENTS" \
    --heartbeat "$HEARTBEAT" --duration "$(( WINDOW + WAIT * 3 + 60 ))s" "${ATTRS[@]}" \
    --source-subnet "$subnet" --json
  local lgpid="$LAST_PID"
  wait_event "$lg" settled "$WAIT" >/dev/null || die "[store $kind] the agents did not settle (see $lg)"
  sleep 5
  local c0 c1 t0 t1 w0 w1 r0 r1
  c0="$(cpu_ticks "$SPID")"; t0="$(now)"
  w0="$(metric_of "$admin" opamp_gitops_store_agent_writes_total)"
  r0="$(metric_of "$admin" opamp_gitops_store_writes_total)"
  sleep "$WINDOW"
  c1="$(cpu_ticks "$SPID")"; t1="$(now)"
  w1="$(metric_of "$admin" opamp_gitops_store_agent_writes_total)"
  r1="$(metric_of "$admin" opamp_gitops_store_writes_total)"
  record "$kind" store_cpu_pct "$(cpu_pct "$c0" "$c1" "$t0" "$t1")"
  record "$kind" store_agent_rows_per_s "$(python3 -c "print(round(($w1-$w0)/($t1-$t0), 1))")"
  record "$kind" store_batches_per_s "$(python3 -c "print(round(($r1-$r0)/($t1-$t0), 2))")"
  record "$kind" rss_mib "$(python3 -c "print(round($(rss_kib "$SPID")/1024, 1))")"

  say "[store $kind] restart"
  stop_pid "$SPID"
  CACHE_NAME="store-$kind" serve "store-$kind-2" "$OUT/plain" "$opamp" "$admin" "${store[@]}"
  record_back "$kind" restart "$lg" "$WAIT"
  record "$kind" restart_server_pushes "$(metric_of "$admin" opamp_gitops_config_pushes_total)"
  record "$kind" restart_server_full_states "$(metric_of "$admin" opamp_gitops_full_state_requests_total)"
  stop_pid "$lgpid"
  stop_pid "$SPID"
  [ "$kind" = postgres ] && stop_postgres
  return 0
}

# ---- replicas: one fleet over several serve processes sharing PostgreSQL ----
replicas_run() {
  local i opamp admin endpoints=() admins=() lg="$OUT/replicas.jsonl" line
  start_postgres
  point_main "$OUT/plain" HEAD~1
  for i in $(seq 1 "$REPLICAS"); do
    opamp="$(free_port)"; admin="$(free_port)"
    serve "replica-$i" "$OUT/plain" "$opamp" "$admin" --store "$PG_URL" --replica-id "r$i"
    endpoints+=(--endpoint "ws://127.0.0.1:$opamp")
    admins+=("$admin")
  done
  point_main "$OUT/plain" HEAD
  say "[replicas] $REPLICA_AGENTS agents over $REPLICAS replicas"
  local t0
  t0="$(now)"
  start_bg "$lg" "$BIN" loadgen "${endpoints[@]}" --agents "$REPLICA_AGENTS" --heartbeat "$HEARTBEAT" \
    --duration "$(( REPLICA_WAIT * 3 ))s" "${ATTRS[@]}" --source-subnet 127.64.0.0/10 \
    --refresh "$(refresh_url "${admins[0]}")" --admin-token-file "$OUT/admin.tokens" --json
  local lgpid="$LAST_PID"
  if line="$(wait_event "$lg" all_connected "$REPLICA_WAIT")"; then
    record ours replicas_all_connected_s "$(python3 -c "print($(field "$line" after_ms)/1000)")"
  else
    die "[replicas] the agents did not all connect within ${REPLICA_WAIT}s (see $lg)"
  fi
  if line="$(wait_event "$lg" converged "$REPLICA_WAIT")"; then
    for p in p50 p90 p99 p100; do record ours "replicas_converge_${p}_ms" "$(field "$line" "${p}_ms")"; done
  else
    say "[replicas] the agents did not all converge within ${REPLICA_WAIT}s"
  fi
  local last="${admins[$(( REPLICAS - 1 ))]}" total
  # Every replica's agents are in the store by the next flush: wait until the last replica
  # counts them all, then time its answers.
  for i in $(seq 1 150); do
    total="$(curl -s "http://127.0.0.1:$last/api/summary" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("total", 0))' 2>/dev/null || echo 0)"
    [ "$total" -ge "$REPLICA_AGENTS" ] && break
    sleep 0.2
  done
  record ours replicas_summary_total "$total"
  record ours replicas_summary_statuses "$(curl -s "http://127.0.0.1:$last/api/summary" | python3 -c 'import json,sys; print(" ".join(f"{k}={v}" for k, v in json.load(sys.stdin)["by_status"] if v))')"
  latency replicas_summary "http://127.0.0.1:$last/api/summary" 20
  local query="label=environment=production&status=applied&sort=-last_seen&limit=50&offset=1000"
  latency replicas_agents_page "http://127.0.0.1:$last/api/agents?$query" 20
  record ours replicas_agents_page_total "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"])' "$OUT/latency-body.json")"
  record ours replicas_rss_mib_each "$(python3 -c "print(round($(rss_kib "$SPID")/1024, 1))")"
  stop_pid "$lgpid"
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  PIDS=()
  stop_postgres
}

# ---- diff: a live fleet of 10k agents in 500 attribute combinations, 50 rules ----
diff_run() {
  local dir="$OUT/rules50" opamp admin lg="$OUT/diff.jsonl" envs regions i
  rm -rf "$dir" && mkdir -p "$dir"
  cp -r "$ROOT/example-config-repo" "$dir/work"
  python3 - "$dir/work/fleet.yaml" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
rules = "".join(
    f"""
  - name: env-{i:02d}
    match:
      environment: env-{i:02d}
    template: agent.yaml.j2
    vars:
      queue_size: {1000 + i}
      mimir_endpoint: https://mimir.env-{i:02d}.example.com/otlp
      loki_endpoint: https://loki.env-{i:02d}.example.com/otlp
"""
    for i in range(45)
)
# 45 generated rules and the example's gateway, two production regions, staging and the
# catch-all: 50 rules, the generated ones first.
text = text.replace("rules:\n", "rules:\n" + rules, 1)
open(path, "w").write(text)
EOF
  repo_commit "$dir" "bench: 50 rules"
  git clone -q --bare "$dir/work" "$dir/remote.git"
  envs="$(python3 -c 'print(",".join(f"env-{i:02d}" for i in range(45)) + ",production,staging,qa,dev,test")')"
  regions="$(python3 -c 'print(",".join(f"region-{i}" for i in range(10)))')"
  opamp="$(free_port)"; admin="$(free_port)"
  serve diff "$dir" "$opamp" "$admin" --store memory
  say "[diff] 10000 agents over 500 attribute combinations"
  start_bg "$lg" "$BIN" loadgen --endpoint "ws://127.0.0.1:$opamp" --agents 10000 \
    --heartbeat "$HEARTBEAT" --duration 600s --attr "environment=$envs" --attr "region=$regions" \
    --source-subnet 127.40.0.0/16 --json
  local lgpid="$LAST_PID"
  wait_event "$lg" settled 300 >/dev/null || die "[diff] the agents did not settle (see $lg)"
  # Every agent's config changes: the generated rules' queue sizes and the default one.
  sed -i 's/queue_size: 5000/queue_size: 5001/; s/queue_size: 10\([0-9][0-9]\)$/queue_size: 20\1/' "$dir/work/fleet.yaml"
  (cd "$dir/work" && "$BIN" check --update . >/dev/null 2>&1) || die "[diff] the change does not check"
  local times=() t0 t1 rc
  for i in 1 2 3 4 5; do
    t0="$(now)"
    rc=0
    "$BIN" diff "$dir/work" --base HEAD --fleet "http://127.0.0.1:$admin" --format json >"$OUT/diff.json" 2>"$OUT/diff.err" || rc=$?
    t1="$(now)"
    [ "$rc" = 0 ] || die "[diff] exit $rc: $(head -c 2000 "$OUT/diff.err")"
    times+=("$(python3 -c "print($t1-$t0)")")
  done
  record ours diff_p50_s "$(python3 -c 'import sys,statistics; print(round(statistics.median(map(float,sys.argv[1:])),2))' "${times[@]}")"
  record ours diff_max_s "$(python3 -c 'import sys; print(round(max(map(float,sys.argv[1:])),2))' "${times[@]}")"
  record ours diff_agents "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["agents"])' "$OUT/diff.json")"
  record ours diff_sets "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["sets"])' "$OUT/diff.json")"
  record ours diff_moved "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["moved"])' "$OUT/diff.json")"
  record ours diff_groups "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["groups"])' "$OUT/diff.json")"
  stop_pid "$lgpid"
  stop_pid "$SPID"
}

# ---- rollout: the same change with and without waves ----
rollout_run() { # KIND (plain|waves) SUBNET
  local kind="$1" subnet="$2" dir="$OUT/$1" opamp admin lg="$OUT/rollout-$1.jsonl" line
  opamp="$(free_port)"; admin="$(free_port)"
  point_main "$dir" HEAD~1
  say "[rollout $kind] $AGENTS agents"
  serve "rollout-$kind" "$dir" "$opamp" "$admin"
  point_main "$dir" HEAD
  start_bg "$lg" "$BIN" loadgen --endpoint "ws://127.0.0.1:$opamp" --agents "$AGENTS" \
    --heartbeat "$HEARTBEAT" --duration "$(( WAIT * 3 ))s" "${ATTRS[@]}" --source-subnet "$subnet" \
    --refresh "$(refresh_url "$admin")" --admin-token-file "$OUT/admin.tokens" --json
  local lgpid="$LAST_PID" c0 c1
  wait_event "$lg" refresh "$(( WAIT * 2 ))" >/dev/null || die "[rollout $kind] no refresh (see $lg)"
  c0="$(cpu_ticks "$SPID")"
  if line="$(wait_event "$lg" converged "$WAIT")"; then
    c1="$(cpu_ticks "$SPID")"
    for p in p50 p90 p99 p100; do record "$kind" "rollout_converge_${p}_ms" "$(field "$line" "${p}_ms")"; done
    record "$kind" rollout_cpu_s "$(cpu_s "$c0" "$c1")"
  else
    say "[rollout $kind] the agents did not all converge within ${WAIT}s"
  fi
  if [ "$kind" = waves ]; then
    record "$kind" rollout_state "$(curl -s "${AUTH[@]}" "http://127.0.0.1:$admin/api/rollout" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rollouts"][0]["state"])')"
  fi
  stop_pid "$lgpid"
  stop_pid "$SPID"
}

make_repo plain
make_repo waves "{waves: [1, 10, 100], soak: 0s}"
k=0
for bench in store replicas diff rollout; do
  case ",$ONLY," in *",$bench,"*) ;; *) continue ;; esac
  case "$bench" in
    store)
      for kind in memory sqlite postgres; do
        store_run "$kind" "127.$(( 10 + k )).0.0/16"; k=$(( k + 1 ))
      done ;;
    replicas) replicas_run ;;
    diff) diff_run ;;
    rollout)
      for kind in plain waves; do
        rollout_run "$kind" "127.$(( 10 + k )).0.0/16"; k=$(( k + 1 ))
      done ;;
  esac
done

say "machine: $(nproc) cores, $(uname -r), open files $(ulimit -Hn); commit $(git -C "$ROOT" rev-parse --short HEAD); $(date -u +%Y-%m-%d)"
python3 - "$RESULTS" <<'EOF'
import sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
print("| run | figure | value |")
print("| --- | --- | ---: |")
for target, key, value in rows:
    print(f"| {target} | {key} | {value} |")
EOF
