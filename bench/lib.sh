# Shared by the benchmark scripts (sourced, not run): build, scratch dir, process cleanup, free
# ports, and nginx (installed on first use if missing) configured as its documentation prescribes
# for WebSocket proxying.
# BIN=DIR: use the wsedge and wsbench release binaries in DIR instead of building them here.
if [ -z "${BIN:-}" ]; then
  nice -n 15 cargo build --release -q -p wsedge -p wsbench
  BIN=${CARGO_TARGET_DIR:-target}/release
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
rss_kb() { local s=0; for p in "$@"; do s=$((s + $(ps -o rss= -p "$p" | tr -d ' '))); done; echo $s; }

# idle_kb PID URL CONNS [wsbench idle args...]: hold CONNS idle WebSockets to URL and print the
# server's RSS growth per connection (KB); the connections close before it returns.
idle_kb() {
  local pid=$1 url=$2 conns=$3 fifo="$work/idle.fifo" n before after
  shift 3
  before=$(rss_kb "$pid")
  rm -f "$fifo"; mkfifo "$fifo"
  ( sleep 600 > "$fifo" ) & local holder=$!
  $BIN/wsbench idle --url "$url" --conns "$conns" "$@" < "$fifo" > "$work/idle.out" & local client=$!
  for _ in $(seq 600); do grep -q ready "$work/idle.out" 2>/dev/null && break; sleep 0.1; done
  n=$(awk '/ready/{print $2}' "$work/idle.out")
  sleep 3
  after=$(rss_kb "$pid")
  kill $holder 2>/dev/null || true; wait $client 2>/dev/null || true
  python3 -c "print(f'{($after-$before)/max(1,${n:-0}):.2f}')"
}

# start_nginx LISTEN_PORT UPSTREAM_PORT: sets NGINX_PID and NGINX_ALL (master + workers).
start_nginx() {
  if ! command -v nginx >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
  fi
  mkdir -p "$work/nginx"
  cat >"$work/nginx/nginx.conf" <<CONF
worker_processes auto;
worker_rlimit_nofile 100000;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 50000; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
  # https://nginx.org/en/docs/http/websocket.html
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  upstream echo { server 127.0.0.1:$2; }
  server {
    listen 127.0.0.1:$1;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header Host \$host;
      proxy_read_timeout 3600s;
    }
  }
}
CONF
  nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" & NGINX_PID=$!
  pids+=($NGINX_PID)
  wait_port "$1"
  sleep 0.3
  NGINX_ALL="$NGINX_PID $(pgrep -P $NGINX_PID | tr '\n' ' ')"
}

# wsedge_server_toml HTTP_PORT HTTPS_PORT [LIMITS_LINE]: the [server], [limits] and [guard]
# sections every benchmark's wsedge config starts with (quiet logs, no access log, admission caps
# out of the way); LIMITS_LINE is added to [limits].
wsedge_server_toml() {
  cat <<TOML
[server]
http = "127.0.0.1:$1"
https = "127.0.0.1:$2"
certdir = "$work/certs"
log_level = "warn"
access_log = false
# Admission caps off (they are by default; stated so no benchmark connection is ever refused).
[limits]
concurrent_per_ip = 100000
concurrent_total = 100000
new_per_ip_per_sec = 100000
connections_per_ip = 0
${3:-}
# Rooms routes have per-IP caps by default (64 open, 20/s); 0 switches them off.
[guard]
concurrent_per_ip = 0
new_per_ip_per_sec = 0
TOML
}
