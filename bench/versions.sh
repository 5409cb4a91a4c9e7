#!/usr/bin/env bash
# Two builds of wsedge side by side in one run, for a change that must not cost speed or memory
# (issue 13's refactor: "within 10 % of the before figures"):
#  A. rooms fan-out: one room, one writer offering RATE updates/s, SUBS subscribers;
#  B. memory per idle room connection (IDLE connections over IDLE_ROOMS rooms);
#  C. memory per idle proxied WebSocket (IDLE connections to an echo upstream).
# Each measurement runs RUNS times per build, interleaved (before, after, after, before, ...), on a
# freshly started server; the table gives medians and after ÷ before.
#
#   BEFORE=/tmp/wsbin-before AFTER=/tmp/wsbin-after bash bench/versions.sh
#   (each directory holds release `wsedge` and `wsbench` binaries; AFTER's wsbench drives both)
#
# Not part of `cargo test`. Loopback only; bounded in time and connections. Needs node + npm only
# for the shared rooms helpers (the Node server is not run here).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BEFORE:?a directory with the before build's wsedge and wsbench}"
: "${AFTER:?a directory with the after build's wsedge and wsbench}"
RATE=${RATE:-500}
SUBS=${SUBS:-500}
SECS=${SECS:-10}
WARMUP=${WARMUP:-2}
DRAIN=${DRAIN:-5}
RUNS=${RUNS:-3}
IDLE_ROOMS=${IDLE_ROOMS:-100}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
MAX_IDLE=$(( ($(ulimit -n) - 200) / 2 ))
IDLE=${IDLE:-$(( MAX_IDLE < 10000 ? MAX_IDLE : 10000 ))}
# Config lines the before build does not know (it refuses unknown fields): dropped for it.
NEW_FIELDS=${NEW_FIELDS:-'^(connections_per_ip|send_timeout|http2_idle_timeout|http2_keepalive_interval|http2_keepalive_timeout|body_timeout) *='}
BIN=$AFTER
source bench/lib.sh

ECHO=$(free_port)
$AFTER/wsbench echo --listen 127.0.0.1:$ECHO >/dev/null & pids+=($!)
wait_port $ECHO

# start build kind: SRV_PID, SRV_URL. kind: rooms | proxy.
start() {
  local dir=$1 kind=$2 port https
  port=$(free_port); https=$(free_port)
  { wsedge_server_toml "$port" "$https"
    if [ "$kind" = rooms ]; then
      printf '[[route]]\npath = "/wss"\nrooms = { store = "memory" }\nplain_http = true\n'
      SRV_URL="ws://127.0.0.1:$port/wss/"
    else
      printf '[[route]]\npath = "/"\nupstream = "http://127.0.0.1:%s"\nplain_http = true\n' "$ECHO"
      SRV_URL="ws://127.0.0.1:$port/"
    fi
  } >"$work/full.toml"
  if [ "$dir" = "$BEFORE" ]; then grep -Ev "$NEW_FIELDS" "$work/full.toml" >"$work/wsedge.toml"
  else cp "$work/full.toml" "$work/wsedge.toml"; fi
  "$dir/wsedge" run -c "$work/wsedge.toml" 2>>"$work/wsedge.log" & SRV_PID=$!
  pids+=($SRV_PID)
  wait_port "$port"
}
stop() { kill "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" 2>/dev/null || true; }

idle() { # dir kind -> KB per connection
  start "$1" "$2"
  local rooms=(); [ "$2" = rooms ] && rooms=(--rooms "$IDLE_ROOMS")
  idle_kb "$SRV_PID" "$SRV_URL" "$IDLE" "${rooms[@]}"
  stop
}

fanout() { # dir -> "delivered_per_sec p99_ms"
  start "$1" rooms
  local out
  out=$(timeout $((WARMUP + SECS + DRAIN + 90)) "$AFTER/wsbench" rooms --threads 1 \
    --url "${SRV_URL}bench" --subs "$SUBS" --rate "$RATE" \
    --secs "$SECS" --warmup "$WARMUP" --drain "$DRAIN" --server-pid "$SRV_PID")
  stop
  python3 -c "
r=dict(kv.split('=') for kv in '''$out'''.split())
print(r['delivered_per_sec'], int(r['p99_us'])/1000, r['got'], r['expected'])"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; before $($BEFORE/wsedge --version) ($BEFORE), after $($AFTER/wsedge --version) ($AFTER)"
echo "# A: $SUBS subscribers x $RATE updates/s, ${SECS}s; B, C: $IDLE idle connections; $RUNS runs each, interleaved"
res="$work/res"; : >"$res"
order=(); for i in $(seq "$RUNS"); do if [ $((i % 2)) = 1 ]; then order+=(before after); else order+=(after before); fi; done
for which in "${order[@]}"; do
  dir=$BEFORE; [ "$which" = after ] && dir=$AFTER
  read -r d p99 got exp <<<"$(fanout "$dir")"
  echo "$which fanout $d $p99 $got $exp" | tee -a "$res"
  echo "$which idle_room $(idle "$dir" rooms)" | tee -a "$res"
  echo "$which idle_proxy $(idle "$dir" proxy)" | tee -a "$res"
done
python3 - "$res" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
def med(which, what, col=2):
    return st.median(float(r[col]) for r in rows if r[0] == which and r[1] == what)
print(f"{'metric (median)':<34} {'before':>10} {'after':>10} {'after/before':>13}")
for label, what, col in [("fan-out deliveries/s", "fanout", 2), ("fan-out p99 (ms)", "fanout", 3),
                         ("idle room connection (KB)", "idle_room", 2),
                         ("idle proxied WebSocket (KB)", "idle_proxy", 2)]:
    b, a = med("before", what, col), med("after", what, col)
    print(f"{label:<34} {b:>10.2f} {a:>10.2f} {a / b if b else float('nan'):>13.3f}")
PY
