#!/usr/bin/env bash
# Side-by-side WebSocket echo benchmark: direct to the echo upstream, through wsedge, through
# nginx (Debian's package, configured as nginx's docs prescribe for WebSocket proxying), in one
# run on this machine. Prints msgs/s and p50/p99 latency per target and the ratios to nginx.
#
#   bash bench/run.sh            # 100 connections, 64 B and 16 KiB, 10 s each (+2 s warm-up)
#   SECS=5 CONNS=50 bash bench/run.sh
#
# Not part of `cargo test`. Needs nginx (installed with apt-get if missing). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}
CONNS=${CONNS:-100}
SIZES=${SIZES:-"64 16384"}

source bench/lib.sh

ECHO=$(free_port); EDGE=$(free_port); EDGE_TLS=$(free_port); NGINX=$(free_port)
$BIN/wsbench echo --listen 127.0.0.1:$ECHO >/dev/null & pids+=($!)

cat >"$work/wsedge.toml" <<TOML
[server]
http = "127.0.0.1:$EDGE"
https = "127.0.0.1:$EDGE_TLS"
certdir = "$work/certs"
log_level = "warn"
access_log = false
[limits]
connections_per_ip = 0
[[route]]
path = "/"
upstream = "http://127.0.0.1:$ECHO"
plain_http = true
TOML
$BIN/wsedge run -c "$work/wsedge.toml" 2>"$work/wsedge.log" & pids+=($!)

start_nginx $NGINX $ECHO
wait_port $ECHO; wait_port $EDGE; wait_port $NGINX

echo "# $(date -u +%FT%TZ) $(nproc) cores, $CONNS connections, ${SECS}s per run, one message in flight per connection"
echo "# wsedge $($BIN/wsedge --version | cut -d' ' -f2), $(nginx -v 2>&1 | cut -d' ' -f3)"
printf "%-8s %-8s %12s %9s %9s %8s %14s %10s\n" size target msgs/s p50_us p99_us errors "msgs/s÷nginx" "p99÷nginx"
for size in $SIZES; do
  declare -A rate p50 p99 errs
  for target in direct wsedge nginx; do
    case $target in
      direct) port=$ECHO ;; wsedge) port=$EDGE ;; nginx) port=$NGINX ;;
    esac
    out=$($BIN/wsbench load --url "ws://127.0.0.1:$port/" --conns "$CONNS" --size "$size" --secs "$SECS")
    eval "$(echo "$out" | sed 's/\([a-z0-9_]*\)=\([0-9.]*\)/local_\1=\2;/g')"
    rate[$target]=$local_msgs_per_sec; p50[$target]=$local_p50_us; p99[$target]=$local_p99_us; errs[$target]=$local_errors
  done
  for target in direct wsedge nginx; do
    printf "%-8s %-8s %12s %9s %9s %8s %14s %10s\n" "$size" "$target" "${rate[$target]}" "${p50[$target]}" "${p99[$target]}" "${errs[$target]}" \
      "$(python3 -c "print(f'{${rate[$target]}/max(${rate[nginx]},1):.2f}')")" \
      "$(python3 -c "print(f'{${p99[$target]}/max(${p99[nginx]},1):.2f}')")"
  done
  unset rate p50 p99 errs
done
