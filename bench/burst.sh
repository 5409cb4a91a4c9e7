#!/usr/bin/env bash
# A burst into a hosted Yjs room, side by side: wsedge vs the Node y-websocket server
# (@y/websocket-server, started exactly as bench/rooms.sh starts it). One room; SUBS subscribers
# join it (full sync handshake); then ONE writer sends N small Yjs updates (text appends, as an
# editor's paste or offline flush produces) as fast as its socket takes them. Every subscriber
# applies what it receives to its own yrs document; the run ends when all of them have the
# writer's whole text, or were closed, or TIMEOUT seconds after the first send. Per server and
# SUBS: deliveries/s (SUBS × N ÷ time from the first send until the last subscriber has the whole
# text), p50/p99 send→receive latency, subscribers closed (and with which codes), final texts
# that differ from the writer's, server peak RSS (VmHWM) and CPU. Ends with wsedge ÷ node.
#
#   bash bench/burst.sh                      # SUBS="50 500" N=2000 TIMEOUT=60
#   SUBS=50 N=500 bash bench/burst.sh        # smaller run
#   BIN=/path/to/release bash bench/burst.sh # prebuilt wsedge + wsbench (no cargo build)
#
# Not part of `cargo test`. Loopback only; bounded: per run at most 60 s to join + TIMEOUT;
# max(SUBS) + 1 connections. Needs node + npm (the Node server is installed into
# bench/rooms-js/node_modules with `npm ci` from the committed lock file, as rooms.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
SUBS=${SUBS:-"50 500"}
N=${N:-2000}
TIMEOUT=${TIMEOUT:-60}
# The load generator: one thread (as in rooms.sh), so that it takes at most one of the cores.
THREADS=${THREADS:-1}
# Before each measured run, a small burst (WARMUP_SUBS subscribers, N updates) into another room
# of the same server, so that neither is measured cold (Node's JIT); 0 to skip.
WARMUP_SUBS=${WARMUP_SUBS:-5}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

source bench/rooms-lib.sh

# Shared VM: wait (at most 60 s) for the machine to be quiet before each run (as rooms.sh does).
busy_pct() {
  local a b; read -ra a < /proc/stat; sleep 1; read -ra b < /proc/stat
  python3 -c "a=[int(x) for x in '${a[*]:1:8}'.split()]; b=[int(x) for x in '${b[*]:1:8}'.split()]; \
t=sum(b)-sum(a); i=(b[3]+b[4])-(a[3]+a[4]); print(round(100*(t-i)/max(t,1)))"
}
wait_quiet() { for _ in $(seq 60); do [ "$(busy_pct)" -lt 15 ] && return; done; echo "   (machine still busy)"; }

echo "## one room, SUBS subscribers joined, one writer sends $N updates back to back; up to ${TIMEOUT}s"
fmt_run() { python3 - "$TIMEOUT" "$@" <<'PY'
import sys
timeout, server, subs, line = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
r = dict(kv.split("=", 1) for kv in line.split())
ms = lambda us: "never" if int(us) < 0 else f"{int(us)/1000:.0f}"
rate = r["deliveries_per_sec"] if float(r["deliveries_per_sec"]) >= 0 else "none"
pct = 100 * int(r["delivered"]) / max(1, int(r["expected"]))
full = f"{float(r['last_full_ms']):.0f}" if float(r["last_full_ms"]) >= 0 else "never"
print(f"{subs:<5} {server:<7} {rate:>12} {full:>8} {r['complete'] + '/' + subs:>9} {pct:>6.1f}"
      f" {ms(r['p50_us']):>7} {ms(r['p99_us']):>7} {r['closed']:>6} {r['close_codes']:>10} {r['wrong_text']:>5}"
      f" {int(r['hwm_kb'])/1024:>7.1f} {int(r['server_cpu_ms'])/1000:>6.2f} {r['server_cpu_pct']:>5} {r['client_cpu_pct']:>5}"
      f" {max(0, int(r['machine_cpu_pct']) - int(r['server_cpu_pct']) - int(r['client_cpu_pct'])):>6}")
notes = []
if r["joined"] != subs: notes.append(f"only {r['joined']} of {subs} subscribers joined")
if r["timed_out"] == "true": notes.append(f"timed out after {timeout}s")
if int(r["closed"]): notes.append(f"closes between {r['first_close_ms']} and {r['last_close_ms']} ms after the first send")
if int(r["complete"]) < int(r["joined"]):
    notes.append(f"incomplete subscribers had {r['incomplete_min']} (fewest) / {r['incomplete_median']} (median)"
                 f" of {r['n']} updates; {int(r['expected']) - int(r['delivered'])} deliveries missing;"
                 f" {r['delivering_per_sec']}/s while it lasted ({r['last_delivery_ms']} ms)")
if r["wrong_text_open"] != "0": notes.append(f"{r['wrong_text_open']} subscribers NOT closed have a different text")
if r["bad_frames"] != "0": notes.append(f"{r['bad_frames']} messages yrs could not decode/apply")
if r["writer_closed"] != "-": notes.append(f"the writer was closed ({r['writer_closed']})")
if r["sent"] != r["n"]: notes.append(f"the writer sent only {r['sent']} of {r['n']}")
notes.append(f"writer's {r['n']} sends took {r['send_ms']} ms; {r['messages']} messages received in all")
print(f"   ({server}: " + "; ".join(notes) + ")")
PY
}
printf "%-5s %-7s %12s %8s %9s %6s %7s %7s %6s %10s %5s %7s %6s %5s %5s %6s\n" subs server deliveries/s full_ms \
  complete got% p50_ms p99_ms closed codes wrong peak_MB cpu_s srv% cli% other%
for subs in $SUBS; do
  for server in wsedge node; do
    start_server $server
    if [ "$WARMUP_SUBS" -gt 0 ]; then
      timeout 100 $BIN/wsbench --threads "$THREADS" burst --url "${SRV_URL}warmup" --subs "$WARMUP_SUBS" \
        --n "$N" --timeout 30 >/dev/null || echo "   (warm-up run failed)"
    fi
    wait_quiet
    out=$(timeout $((TIMEOUT + 120)) $BIN/wsbench --threads "$THREADS" burst \
      --url "${SRV_URL}burst-$subs" --subs "$subs" --n "$N" --timeout "$TIMEOUT" --server-pid "$SRV_PID")
    stop_server
    echo "$server $subs $out" >> "$work/results"
    fmt_run $server "$subs" "$out"
  done
done

echo "## wsedge ÷ node"
python3 - "$TIMEOUT" "$work/results" <<'PY'
import sys
timeout = int(sys.argv[1])
res = {}
for line in open(sys.argv[2]):
    server, subs, *kv = line.split()
    res[server, subs] = dict(x.split("=", 1) for x in kv)
def row(label, a, b, fmt="{:.1f}", missing="none"):
    show = lambda v: missing if v is None else fmt.format(v)
    ratio = "-" if a is None or b is None or not b else f"{a / b:.2f}"
    print(f"{label:<36} {show(a):>11} {show(b):>11} {ratio:>12}")
print(f"{'metric':<36} {'wsedge':>11} {'node':>11} {'wsedge÷node':>12}")
aims = []
for subs in sorted({s for _, s in res}, key=int):
    e, n = res["wsedge", subs], res["node", subs]
    rate = lambda r: None if float(r["deliveries_per_sec"]) < 0 else float(r["deliveries_per_sec"])
    row(f"{subs} subs: deliveries/s", rate(e), rate(n), "{:.0f}")
    row(f"{subs} subs: delivered of expected (%)", *(100 * int(r["delivered"]) / max(1, int(r["expected"])) for r in (e, n)))
    for q in ("p50", "p99"):
        ms = lambda r: None if int(r[q + "_us"]) < 0 else int(r[q + "_us"]) / 1000
        row(f"{subs} subs: {q} latency (ms)", ms(e), ms(n), missing="never")
    row(f"{subs} subs: subscribers closed", int(e["closed"]), int(n["closed"]), "{:.0f}")
    row(f"{subs} subs: final text != writer's", int(e["wrong_text"]), int(n["wrong_text"]), "{:.0f}")
    row(f"{subs} subs: server peak RSS (MB)", int(e["hwm_kb"]) / 1024, int(n["hwm_kb"]) / 1024)
    row(f"{subs} subs: server CPU (s)", int(e["server_cpu_ms"]) / 1000, int(n["server_cpu_ms"]) / 1000, "{:.2f}")
    ok = rate(e) is not None and rate(n) is not None and rate(e) >= 5 * rate(n) and e["closed"] == "0" and e["wrong_text"] == "0"
    aims.append(f"{subs} subs: {'met' if ok else 'NOT met'}")
print("aim (wsedge deliveries/s >= 5x node's, no subscriber closed, every text equal): " + "; ".join(aims))
PY
