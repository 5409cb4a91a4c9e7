#!/usr/bin/env bash
# Hosted Yjs rooms side by side: wsedge vs the Node y-websocket server (@y/websocket-server, the
# server half of y-websocket 3.x, from npm), in one run on this machine:
#  A. one room, one writer offering RATE Yjs updates/s, SUBS subscribers (50 and 500): delivered
#     updates/s, p50/p99 send→receive latency, server CPU and RSS;
#  B. memory per idle room connection: IDLE connections over IDLE_ROOMS rooms, RSS growth ÷ count;
#  C. the same for wsedge over wss (TLS with a `wsedge dev-certs` certificate; the Node server
#     speaks plain ws only, TLS is put in front of it by something else).
# Each measurement gets a freshly started server. Ends with a table of wsedge ÷ node.
#
#   bash bench/rooms.sh            # RATE=500 SUBS="50 500" SECS=10 IDLE=10000 IDLE_ROOMS=100
#   SECS=5 IDLE=2000 bash bench/rooms.sh
#
# Not part of `cargo test`. Loopback only; bounded in time (each load run: WARMUP + SECS + at
# most DRAIN seconds) and in connections (max(SUBS) + 1, IDLE). Needs node + npm: the Node server
# is installed into bench/rooms-js/node_modules with `npm ci` from the committed lock file.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-500}
SUBS=${SUBS:-"50 500"}
SECS=${SECS:-10}
WARMUP=${WARMUP:-2}
DRAIN=${DRAIN:-5}
IDLE_ROOMS=${IDLE_ROOMS:-100}
# The load generator: one thread keeps it at about half a core and away from the server's.
THREADS=${THREADS:-1}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# A hosted room connection is one descriptor on the server and one in the client (another process).
MAX_IDLE=$(( $(ulimit -n) - 200 ))
IDLE=${IDLE:-$(( MAX_IDLE < 10000 ? MAX_IDLE : 10000 ))}

source bench/rooms-lib.sh

# Shared VM: wait (at most 60 s) for the machine to be quiet before each measurement, so a
# compile next door does not count against one server; the other% column shows what remained.
busy_pct() { # whole machine, % of all cores, over 1 s
  local a b; read -ra a < /proc/stat; sleep 1; read -ra b < /proc/stat
  python3 -c "a=[int(x) for x in '${a[*]:1:8}'.split()]; b=[int(x) for x in '${b[*]:1:8}'.split()]; \
t=sum(b)-sum(a); i=(b[3]+b[4])-(a[3]+a[4]); print(round(100*(t-i)/max(t,1)))"
}
wait_quiet() { for _ in $(seq 60); do [ "$(busy_pct)" -lt 15 ] && return; done; echo "   (machine still busy)"; }

# One line per run in $work/results: "server subs key=value ...", formatted at the end.
echo "## A. one room, one writer offering $RATE updates/s; ${SECS}s window after ${WARMUP}s warm-up; up to ${DRAIN}s drain"
fmt_run() { python3 - "$DRAIN" "$@" <<'PY'
import sys
drain, server, subs, line = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
r = dict(kv.split("=") for kv in line.split())
ms = lambda us: f">{int(drain)*1000}" if int(us) < 0 else f"{int(us)/1000:.1f}"
other = max(0, int(r["machine_cpu_pct"]) - int(r["server_cpu_pct"]) - int(r["client_cpu_pct"]))
print(f"{subs:<5} {server:<7} {r['offered_per_sec']:>9} {r['delivered_per_sec']:>11} {r['expected']:>9} {r['got']:>9}"
      f" {ms(r['p50_us']):>8} {ms(r['p99_us']):>8} {int(r['rss_kb'])/1024:>7.1f} {int(r['hwm_kb'])/1024:>7.1f}"
      f" {r['server_cpu_pct']:>5} {r['client_cpu_pct']:>5} {other:>6}")
if r["errors"] != "0" or r["connected"] != subs:
    print(f"   ({server}: {r['connected']} of {subs} subscribers connected, {r['errors']} errors)")
PY
}
printf "%-5s %-7s %9s %11s %9s %9s %8s %8s %7s %7s %5s %5s %6s\n" subs server offered/s delivered/s expected got \
  p50_ms p99_ms rss_MB peak_MB srv% cli% other%
for subs in $SUBS; do
  for server in wsedge node; do
    start_server $server
    wait_quiet
    out=$(timeout $((WARMUP + SECS + DRAIN + 90)) $BIN/wsbench rooms --threads "$THREADS" \
      --url "${SRV_URL}bench-$subs" --subs "$subs" --rate "$RATE" \
      --secs "$SECS" --warmup "$WARMUP" --drain "$DRAIN" --server-pid "$SRV_PID")
    stop_server
    echo "$server $subs $out" >> "$work/results"
    fmt_run $server "$subs" "$out"
  done
done

echo "## B. idle room connections: $IDLE over $IDLE_ROOMS rooms, each joined with a SyncStep1; RSS growth ÷ connections"
$BIN/wsedge dev-certs --name localhost "$work/certs" >/dev/null
for server in wsedge node wsedge-wss; do
  start_server $server
  wait_quiet
  before=$(rss_kb "$SRV_PID")
  fifo="$work/idle.$server"; mkfifo "$fifo"
  ( sleep 600 > "$fifo" ) & holder=$!
  $BIN/wsbench idle --url "$SRV_URL" --rooms "$IDLE_ROOMS" --conns "$IDLE" --ca "$work/certs/ca.pem" < "$fifo" > "$work/idle.$server.out" & client=$!
  for _ in $(seq 600); do grep -q ready "$work/idle.$server.out" 2>/dev/null && break; sleep 0.1; done
  n=$(awk '/ready/{print $2}' "$work/idle.$server.out")
  sleep 3 # let the SyncStep2 answers go out and the server settle
  after=$(rss_kb "$SRV_PID")
  per=$(python3 -c "print(f'{($after-$before)/max(1,${n:-0}):.2f}')")
  echo "$server idle per_kb=$per" >> "$work/results"
  printf "%-10s %6s conns  RSS %7s KB -> %7s KB  = %6s KB per connection\n" $server "$n" "$before" "$after" "$per"
  kill $holder 2>/dev/null || true; wait $client 2>/dev/null || true
  stop_server
done

echo "## wsedge ÷ node"
python3 - "$DRAIN" "$work/results" <<'PY'
import sys
drain = int(sys.argv[1])
res = {}
for line in open(sys.argv[2]):
    server, subs, *kv = line.split()
    res[server, subs] = dict(x.split("=") for x in kv)
def num(v):  # None: the quantile fell among deliveries that never arrived
    return None if float(v) < 0 else float(v)
def row(label, a, b, fmt="{:.1f}"):
    show = lambda v: f">{drain * 1000}" if v is None else fmt.format(v)
    if a is None and b is None: ratio = "-"
    elif b is None: ratio = f"<{a / (drain * 1000):.4f}"
    elif a is None: ratio = f">{drain * 1000 / b:.1f}"
    else: ratio = f"{a / b:.2f}" if b else "-"
    print(f"{label:<38} {show(a):>11} {show(b):>11} {ratio:>12}")
print(f"{'metric':<38} {'wsedge':>11} {'node':>11} {'wsedge÷node':>12}")
for subs in sorted({s for _, s in res if s != "idle"}, key=int):
    e, n = res["wsedge", subs], res["node", subs]
    row(f"{subs} subs: deliveries/s", float(e["delivered_per_sec"]), float(n["delivered_per_sec"]), "{:.0f}")
    pct = lambda r: 100 * int(r["got"]) / max(1, int(r["expected"]))
    row(f"{subs} subs: delivered of expected (%)", pct(e), pct(n))
    for q in ("p50", "p99"):
        ms = lambda r: None if num(r[q + "_us"]) is None else num(r[q + "_us"]) / 1000
        row(f"{subs} subs: {q} latency (ms)", ms(e), ms(n))
    row(f"{subs} subs: server peak RSS (MB)", int(e["hwm_kb"]) / 1024, int(n["hwm_kb"]) / 1024)
row("idle room connection (KB)", float(res["wsedge", "idle"]["per_kb"]), float(res["node", "idle"]["per_kb"]), "{:.2f}")
print(f"{'idle room connection over wss (KB)':<38} {float(res['wsedge-wss', 'idle']['per_kb']):>11.2f} {'n/a':>11} {'-':>12}")
PY
