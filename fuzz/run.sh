#!/usr/bin/env bash
# Fuzz every target (or the ones named) for SECONDS each, two at a time (the machines have two
# cores), then print per target: executions, corpus size, crashes. Exits 1 if any target crashed.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# Build: `cargo fuzz build -O --sanitizer none` (stable toolchain; -O: release without global
# debug assertions, wsedge's own are switched back on in fuzz/Cargo.toml). Builds take the lock
# /tmp/wsedge-cargo.lock, so they never run beside another cargo build that takes it too.
#
# Corpora: the committed seeds in fuzz/corpus/<target> are read, never written; what the fuzzer
# finds goes to fuzz/target/corpus/<target> (kept between runs, not committed). Crashes, OOMs and
# timeouts are saved under fuzz/artifacts/<target>/; logs are in fuzz/target/logs/<target>.log.
# Memory: -rss_limit_mb=256, and the targets' own allocator aborts past 256 MiB of live heap
# (fuzz/src/lib.rs), so a blow-up is a crash either way; an input running 20 s is a timeout.
set -euo pipefail

usage() {
  echo "usage: $0 SECONDS [ws_frame ws_conn room_frame awareness http_framing config]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
secs=$1
shift
[[ $secs =~ ^[0-9]+$ ]] && [ "$secs" -gt 0 ] || usage

all=(ws_frame ws_conn room_frame awareness http_framing config)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

# Longest input per target: deep nesting (~16 KB of yrs Any) and multi-frame streams need room.
max_len() {
  case $1 in
    room_frame | awareness | ws_conn) echo 65536 ;;
    ws_frame | http_framing) echo 8192 ;;
    config) echo 4096 ;;
    *) echo "unknown target: $1" >&2; exit 2 ;;
  esac
}
for t in "${targets[@]}"; do max_len "$t" >/dev/null; done

fuzz=$(cd "$(dirname "$0")" && pwd)
cd "$fuzz/.."

command -v cargo-fuzz >/dev/null || {
  echo "cargo-fuzz is missing: flock /tmp/wsedge-cargo.lock cargo install cargo-fuzz --locked" >&2
  exit 2
}
mkdir -p "$fuzz/target/logs"
echo "building the fuzz targets (waits for /tmp/wsedge-cargo.lock)" >&2
flock /tmp/wsedge-cargo.lock cargo fuzz build -O --sanitizer none >"$fuzz/target/logs/build.log" 2>&1 || {
  cat "$fuzz/target/logs/build.log" >&2
  exit 2
}
triple=$(rustc -vV | sed -n 's/^host: //p')
bin="$fuzz/target/$triple/release"

run_one() {
  local t=$1 code
  mkdir -p "$fuzz/target/corpus/$t" "$fuzz/artifacts/$t"
  # New inputs land in the first corpus directory; the committed seeds are only read.
  "$bin/$t" "$fuzz/target/corpus/$t" "$fuzz/corpus/$t" \
    -max_total_time="$secs" -rss_limit_mb=256 -max_len="$(max_len "$t")" -timeout=20 \
    -print_final_stats=1 -artifact_prefix="$fuzz/artifacts/$t/" \
    >"$fuzz/target/logs/$t.log" 2>&1 || code=$?
  echo "${code:-0}" >"$fuzz/target/logs/$t.exit"
}

start=$(date +%s)
touch "$fuzz/target/logs/.start"
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge 2 ]; then
    wait -n || true
    running=$((running - 1))
  fi
  echo "fuzzing $t for ${secs}s" >&2
  run_one "$t" &
  running=$((running + 1))
done
wait || true

crashed=0
printf '%-13s %12s %8s %8s  %s\n' target executions new corpus crashes
for t in "${targets[@]}"; do
  log="$fuzz/target/logs/$t.log"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  added=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
  corpus=$(find "$fuzz/target/corpus/$t" -type f | wc -l)
  crashes=$(find "$fuzz/artifacts/$t" -type f -newer "$fuzz/target/logs/.start" | sort)
  code=$(cat "$fuzz/target/logs/$t.exit")
  if [ -n "$crashes" ] || [ "$code" != 0 ]; then
    crashed=1
    found="exit $code: ${crashes:-(no artifact; see $log)}"
  else
    found=none
  fi
  printf '%-13s %12s %8s %8s  %s\n' "$t" "${execs:-?}" "${added:-?}" "$corpus" "${found//$'\n'/ }"
done
echo "$(( $(date +%s) - start ))s; logs in $fuzz/target/logs" >&2
if [ "$crashed" = 1 ]; then
  echo "crashes: reproduce with fuzz/target/$triple/release/<target> <artifact>; see fuzz/README.md" >&2
  exit 1
fi
