# Shared by the hosted-rooms benchmarks (rooms.sh, burst.sh): the Node y-websocket server from
# bench/rooms-js, wsedge with one memory rooms route, and the run's header line. Sourced after
# bench/lib.sh's settings; needs node + npm.
command -v node >/dev/null && command -v npm >/dev/null || { echo "node and npm are required" >&2; exit 1; }
if [ ! -d bench/rooms-js/node_modules/@y/websocket-server ]; then
  # --ignore-scripts: the only install script is leveldown's (y-leveldb, used only with YPERSISTENCE).
  (cd bench/rooms-js && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
fi
NODE_SERVER=bench/rooms-js/node_modules/@y/websocket-server/src/server.js

source bench/lib.sh

# start_server wsedge|node: sets SRV_PID and SRV_URL (the rooms' base URL, ending in '/').
start_server() {
  local port; port=$(free_port)
  if [ "$1" = wsedge ] || [ "$1" = wsedge-wss ]; then
    local https; https=$(free_port)
    { wsedge_server_toml "$port" "$https"; cat <<TOML
[[route]]
path = "/wss"
rooms = { store = "memory" }
plain_http = true
TOML
    } >"$work/wsedge.toml"
    $BIN/wsedge run -c "$work/wsedge.toml" 2>>"$work/wsedge.log" & SRV_PID=$!
    SRV_URL="ws://127.0.0.1:$port/wss/"
    if [ "$1" = wsedge-wss ]; then SRV_URL="wss://localhost:$https/wss/"; port=$https; fi
  else
    HOST=127.0.0.1 PORT=$port node "$NODE_SERVER" >>"$work/node.log" 2>&1 & SRV_PID=$!
    SRV_URL="ws://127.0.0.1:$port/"
  fi
  pids+=($SRV_PID)
  wait_port "$port"
}
stop_server() { kill "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" 2>/dev/null || true; }

git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || git_rev="$git_rev+uncommitted changes"
pkg() { node -p "require('./bench/rooms-js/node_modules/$1/package.json').version"; }
echo "# $(date -u +%FT%TZ) $(nproc) cores; wsedge $($BIN/wsedge --version | cut -d' ' -f2) ($git_rev, $BIN)," \
  "@y/websocket-server $(pkg @y/websocket-server) (yjs $(pkg yjs), ws $(pkg ws)), node $(node --version)"

