#!/usr/bin/env bash
# The push service side by side with a Node websocket-push (bench/push-node: ws + the npm redis
# client, the documented behaviour written for this bench), both on one redis-server started here:
#  B. memory per idle push socket: IDLE sockets, server RSS growth ÷ sockets, RUNS runs each,
#     interleaved, medians.
# Not measured yet (issue 14's bench is unfinished): deliveries/s and publish-to-receipt latency
# of pushes to rooms and users at 200/s and unthrottled.
#
#   bash bench/push.sh                 # IDLE=10000 RUNS=3
#
# Not part of `cargo test`. Loopback only; bounded in connections and time. Needs node, npm and
# redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
MAX_IDLE=$(( $(ulimit -n) - 200 ))
IDLE=${IDLE:-$(( MAX_IDLE < 10000 ? MAX_IDLE : 10000 ))}
command -v node >/dev/null && command -v redis-server >/dev/null || { echo "node and redis-server are required" >&2; exit 1; }
[ -d bench/push-node/node_modules/ws ] || (cd bench/push-node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
source bench/lib.sh

REDIS=$(free_port)
redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no >/dev/null & pids+=($!)
wait_port "$REDIS"

start() { # wsedge|node: SRV_PID, SRV_URL
  local port https; port=$(free_port)
  if [ "$1" = wsedge ]; then
    https=$(free_port)
    { wsedge_server_toml "$port" "$https" 'trusted_proxies = ["127.0.0.0/8"]'; cat <<TOML
[redis]
url = "redis://127.0.0.1:$REDIS"
[[route]]
path = "/server_notifications"
plain_http = true
push = {}
TOML
    } >"$work/wsedge.toml"
    $BIN/wsedge run -c "$work/wsedge.toml" 2>>"$work/wsedge.log" & SRV_PID=$!
  else
    PORT=$port REDIS_URL="redis://127.0.0.1:$REDIS" node bench/push-node/server.mjs >>"$work/node.log" 2>&1 & SRV_PID=$!
  fi
  SRV_URL="ws://127.0.0.1:$port/server_notifications/connect"
  pids+=($SRV_PID)
  wait_port "$port"
  sleep 0.5
}
stop() { kill "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" 2>/dev/null || true; }

idle() { # server -> KB per socket
  start "$1"
  idle_kb "$SRV_PID" "$SRV_URL" "$IDLE"
  stop
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; wsedge $($BIN/wsedge --version | cut -d' ' -f2), node $(node --version), redis $(redis-server --version | awk '{print $3}'); $IDLE idle push sockets, $RUNS runs each"
res="$work/res"; : >"$res"
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) = 1 ]; then order=(wsedge node); else order=(node wsedge); fi
  for s in "${order[@]}"; do echo "$s idle $(idle "$s")" | tee -a "$res"; done
done
python3 - "$res" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
med = lambda who: st.median(float(r[2]) for r in rows if r[0] == who)
w, n = med("wsedge"), med("node")
print(f"idle push socket (KB, median): wsedge {w:.2f}, node {n:.2f}, wsedge/node {w/n:.2f}")
PY
