# Helpers shared by scripts/bench.sh and scripts/bench-fleet.sh (sourced, not run): the
# processes a benchmark starts (stopped on exit), waits on log lines and loadgen events with a
# deadline, /proc readings, and the results file (RESULTS, one `target<TAB>key<TAB>value` a line).
say() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }
secs_of() { python3 -c 'import sys,re; m=re.fullmatch(r"(\d+)(ms|s|m)",sys.argv[1]); print((int(m[1])/{"ms":1000,"s":1,"m":1/60}[m[2]]) if m else sys.exit("bad duration "+sys.argv[1]))' "$1"; }
CLK_TCK="$(getconf CLK_TCK)"

# ---- processes this script started, stopped on exit ----
PIDS=()
LAST_PID=""
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
start_bg() { # LOG CMD...: starts CMD in the background with stdout and stderr to LOG
  local log="$1"; shift
  "$@" >"$log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
stop_pid() { # PID: SIGTERM, then SIGKILL after 30 s
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
wait_line() { # FILE PATTERN SECONDS: prints the first line of FILE containing PATTERN
  local file="$1" pattern="$2" i
  for i in $(seq 1 $(( $3 * 5 ))); do
    if grep -m1 -F -- "$pattern" "$file" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  return 1
}
wait_event() { wait_line "$1" "\"event\":\"$2\"" "$3"; }
field() { # JSON PATH...: a value from a JSON object ("" when absent)
  python3 -c '
import json, sys
v = json.loads(sys.argv[1])
for k in sys.argv[2:]:
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$@"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
slab_kib() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
now() { date +%s.%N; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$RESULTS"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# record_back TARGET PREFIX LOADGEN_JSONL SECONDS: after a restart, records when every agent was
# back, the configs it received and the full-state requests, as loadgen counted them
record_back() {
  local line
  if line="$(wait_event "$3" reconnected "$4")"; then
    record "$1" "${2}_back_s" "$(python3 -c "v='$(field "$line" after_ms)'; print(int(v)/1000 if v else 'not all back')")"
    record "$1" "${2}_configs_received" "$(field "$line" configs_received)"
    record "$1" "${2}_full_state_requests" "$(field "$line" full_state_requests)"
  else
    say "[$1] the agents did not all come back within ${4}s"
  fi
}
