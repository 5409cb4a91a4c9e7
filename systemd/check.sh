#!/usr/bin/env bash
# Checks systemd/wsedge.service: `systemd-analyze verify` passes and
# `systemd-analyze security --offline=true` scores an exposure of 2.0 or less.
# usage: bash systemd/check.sh [path/to/wsedge]   (default: target/debug/wsedge)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/wsedge}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# verify insists that ExecStart's binary exists: check a copy pointing at the one just built.
sed "s#/usr/local/bin/wsedge#$bin#g" systemd/wsedge.service > "$tmp/wsedge.service"
systemd-analyze verify "$tmp/wsedge.service"
echo "systemd-analyze verify: OK"
out=$(systemd-analyze security --offline=true --no-pager systemd/wsedge.service)
score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for wsedge.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: exposure $score"
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }' || {
  printf '%s\n' "$out" | grep -v '✓' >&2
  echo "exposure $score is above 2.0" >&2
  exit 1
}
