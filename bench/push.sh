#!/usr/bin/env bash
# The push service side by side with a Node websocket-push (bench/push-node: ws + the npm redis
# client, the documented behaviour written for this bench), both on one redis-server started here:
#  A. CONNS push sockets (users u0..u4999, two tabs each) in 100 rooms; `wsbench push` publishes
#     BackgroundPush on Redis to rooms (100 sockets each) or users (2 tabs each), at 200/s and
#     unthrottled (as fast as the server keeps up, with up to WINDOW deliveries outstanding):
#     deliveries/s, publish→receipt p50/p99, server RSS and CPU. A fresh server per run.
#  B. memory per idle push socket: IDLE sockets, server RSS growth ÷ sockets.
# RUNS runs of each, servers interleaved; medians.
#
#   bash bench/push.sh                 # CONNS=10000 SECS=5 WINDOW=200000 IDLE=10000 RUNS=3
#
# Not part of `cargo test`. Loopback only; bounded in connections and time. Needs node, npm and
# redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SECS=${SECS:-5}
WARMUP=${WARMUP:-2}
WINDOW=${WINDOW:-200000}
# The load generator: one thread, about one core, beside the server's.
THREADS=${THREADS:-1}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
MAX_IDLE=$(( $(ulimit -n) - 200 ))
IDLE=${IDLE:-$(( MAX_IDLE < 10000 ? MAX_IDLE : 10000 ))}
CONNS=${CONNS:-$IDLE}
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

load() { # server target rate -> one wsbench line
  start "$1"
  timeout $((WARMUP + SECS + 150)) $BIN/wsbench --threads "$THREADS" push --url "$SRV_URL" \
    --redis "redis://127.0.0.1:$REDIS" --conns "$CONNS" --users $((CONNS / 2)) --rooms 100 \
    --target "$2" --rate "$3" --window "$WINDOW" --secs "$SECS" --warmup "$WARMUP" --server-pid "$SRV_PID" \
    || echo "failed=1"
  stop
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; wsedge $($BIN/wsedge --version | cut -d' ' -f2), node $(node --version), redis $(redis-server --version | awk '{print $3}'); $RUNS runs each, medians"
echo "## A. $CONNS push sockets in 100 rooms; pushes on Redis at 200/s and unthrottled (window $WINDOW deliveries); ${SECS}s after ${WARMUP}s warm-up"
res="$work/res"; : >"$res"
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) = 1 ]; then order=(wsedge node); else order=(node wsedge); fi
  for case in "room 200" "user 200" "room 0" "user 0"; do
    for s in "${order[@]}"; do
      # shellcheck disable=SC2086
      echo "$s $case $(load "$s" $case | tail -1)" | tee -a "$res"
    done
  done
done
python3 - "$res" <<'PY'
import sys, statistics as st
rows = []
for l in open(sys.argv[1]):
    p = l.split()
    if len(p) < 4 or "=" not in p[3]:
        continue
    rows.append((p[0], p[1], int(p[2]), dict(kv.split("=", 1) for kv in p[3:])))
def med(server, target, rate, key):
    v = [float(r[key]) for s, t, q, r in rows if (s, t, q) == (server, target, rate) and key in r]
    return st.median(v) if v else float("nan")
ms = lambda us: ">drain" if us < 0 else f"{us / 1000:.1f}"
print(f"{'pushes':<18} {'server':<7} {'offered/s':>9} {'delivered/s':>11} {'p50_ms':>8} {'p99_ms':>8} {'rss_MB':>7} {'srv%':>5} {'cli%':>5} {'lost':>5}")
for target, rate in [("room", 200), ("user", 200), ("room", 0), ("user", 0)]:
    label = f"to {target}s {'200/s' if rate else 'unthrottled'}"
    for s in ("wsedge", "node"):
        g = lambda k: med(s, target, rate, k)
        print(f"{label:<18} {s:<7} {g('offered_per_sec'):>9.0f} {g('delivered_per_sec'):>11.0f} {ms(g('p50_us')):>8} "
              f"{ms(g('p99_us')):>8} {g('rss_kb') / 1024:>7.1f} {g('server_cpu_pct'):>5.0f} {g('client_cpu_pct'):>5.0f} {g('lost'):>5.0f}")
    w, n = med("wsedge", target, rate, "delivered_per_sec"), med("node", target, rate, "delivered_per_sec")
    print(f"{'':<18} wsedge/node deliveries/s {w / n:.2f}")
PY

echo "## B. memory per idle push socket: $IDLE sockets, server RSS growth ÷ sockets"
res="$work/idle"; : >"$res"
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
