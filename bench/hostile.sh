#!/usr/bin/env bash
# Heavy room input must not stall the rest of the server. One wsedge (release build, both cores)
# with a rooms route and a proxy route to a small HTTP upstream; a probe makes RATE sequential
# GETs/s through the proxy route (a new connection each), first alone, then while CONNS writers
# send maximum-size (16 MiB, the default max_message) Yjs updates back to back, each update new
# content in full (decoded, validated, integrated, broadcast), moving to a fresh room when the
# document reaches max_document (1009). Aim: the probe's p99 under 100 ms during the flood.
#
#   bash bench/hostile.sh                 # CONNS=4 SECS=20 RATE=20
#
# Not part of `cargo test`. Loopback only; bounded: two runs of SECS seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-4}
SECS=${SECS:-20}
RATE=${RATE:-20}
SIZE=${SIZE:-16777216}
source bench/lib.sh

up=$(free_port)
mkdir -p "$work/www" && echo "hello from the upstream" >"$work/www/index.html"
python3 -m http.server "$up" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 & pids+=($!)
wait_port "$up"
port=$(free_port); https=$(free_port)
{ wsedge_server_toml "$port" "$https"; cat <<TOML
[[route]]
path = "/wss"
plain_http = true
rooms = { store = "memory", unload_after = "1s" }
[[route]]
path = "/"
plain_http = true
upstream = "http://127.0.0.1:$up"
TOML
} >"$work/wsedge.toml"
$BIN/wsedge run -c "$work/wsedge.toml" 2>"$work/wsedge.log" & SRV=$!; pids+=($SRV)
wait_port "$port"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "probe alone (${SECS}s, ${RATE}/s):"
alone=$($BIN/wsbench --threads 1 probe --url "http://127.0.0.1:$port/index.html" --rate "$RATE" --secs "$SECS")
echo "  $alone"

echo "probe during the flood ($CONNS writers, $SIZE-byte updates):"
t0=$(ticks $SRV)
$BIN/wsbench --threads 1 flood --url "ws://127.0.0.1:$port/wss/flood-" --conns "$CONNS" --size "$SIZE" --secs "$SECS" >"$work/flood.out" & FLOOD=$!; pids+=($FLOOD)
sleep 1 # the writers build their updates first
during=$($BIN/wsbench --threads 1 probe --url "http://127.0.0.1:$port/index.html" --rate "$RATE" --secs "$((SECS - 2))")
wait $FLOOD || true
t1=$(ticks $SRV)
echo "  $during"
echo "  flood: $(cat "$work/flood.out")"
echo "  wsedge: cpu $(( (t1 - t0) )) ticks (100/s) over the flood, VmHWM $(awk '/VmHWM/ {print $2, $3}' /proc/$SRV/status)"
p99=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$during")
awk -v p="$p99" 'BEGIN { if (p < 100) print "aim met: p99 " p " ms < 100 ms"; else print "aim MISSED: p99 " p " ms >= 100 ms" }'
