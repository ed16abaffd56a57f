#!/usr/bin/env bash
# Miss flood: every request a new cacheable key, for a while, and what relais's
# resident memory does meanwhile. By default each request is a new variant of
# one URL (the origin answers `Vary: X-Random` and the client sends a new
# X-Random each time); MODE=url makes each a new URL instead. relais runs with
# the budgets given (defaults below, small on purpose) and its access log off;
# the origin (nginx, `return 200`) shares SERVER_CPU, wrk runs on CLIENT_CPU.
# Prints RSS every STEP seconds with the requests served and the entries on
# disk, then the peak.
#
# Usage: benches/flood.sh       (DURATION=60 CONNS=20 MODE=vary STEP=5
#                                MEMORY=8MiB FILL=128MiB BACKLOG=32MiB BODY=1024)
# Needs wrk and nginx (installed from Debian if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60} CONNS=${CONNS:-20} MODE=${MODE:-vary} STEP=${STEP:-5} BODY=${BODY:-1024}
MEMORY=${MEMORY:-8MiB} FILL=${FILL:-128MiB} BACKLOG=${BACKLOG:-32MiB}
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin
RELAIS_BIN=${RELAIS_BIN:-}
if [[ -z $RELAIS_BIN ]]; then
    cargo build --release --quiet
    RELAIS_BIN=target/release/relais
fi
run=$(mktemp -d /var/tmp/relais-flood.XXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$run"' EXIT
body=$(head -c "$BODY" /dev/zero | tr '\0' x)
vary=""
[[ $MODE == vary ]] && vary='add_header Vary "X-Random";'
cat > "$run/origin.conf" <<CONF
worker_processes 1; daemon off; pid $run/origin.pid; error_log $run/origin.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $run/t1; proxy_temp_path $run/t2; fastcgi_temp_path $run/t3;
  uwsgi_temp_path $run/t4; scgi_temp_path $run/t5;
  server { listen 127.0.0.1:18191;
    location / { add_header Cache-Control "public, max-age=3600"; $vary return 200 "$body"; } } }
CONF
taskset -c "$SERVER_CPU" nginx -c "$run/origin.conf" -p "$run" & sleep 0.5
cat > "$run/relais.toml" <<CONF
[server]
listen = ["127.0.0.1:18190"]
[admin]
listen = "127.0.0.1:18192"
[cache]
memory_capacity = "$MEMORY"
fill_memory = "$FILL"
disk_write_backlog = "$BACKLOG"
disk_path = "$run/cache"
[log]
access = false
[upstreams.origin]
servers = ["127.0.0.1:18191"]
[[routes]]
upstream = "origin"
CONF
taskset -c "$SERVER_CPU" "$RELAIS_BIN" run -c "$run/relais.toml" 2>"$run/relais.err" &
relais=$!
for _ in $(seq 50); do curl -s -o /dev/null 127.0.0.1:18190/ && break; sleep 0.1; done
cat > "$run/flood.lua" <<'LUA'
local n, id = 0, 0
setup = function(thread) id = id + 1; thread:set("tid", id) end
request = function()
  n = n + 1
  local key = string.format("%d-%d-%d", os.time(), tid, n)
  if MODE == "url" then return wrk.format("GET", "/u/" .. key) end
  return wrk.format("GET", "/v", { ["X-Random"] = key })
end
LUA
sed -i "1i MODE = \"$MODE\"" "$run/flood.lua"
rss() { awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$relais/status"; }
stats() {
    curl -s 127.0.0.1:18192/stats | python3 -c 'import json, sys; d = json.load(sys.stdin); c = d["cache"]; print(d["requests"]["total"], c["disk"]["entries"], d["disk_writes_skipped"], c["memory"]["entries"], c["memory"]["bytes"] >> 20)'
}
echo "relais: memory_capacity $MEMORY, fill_memory $FILL, disk_write_backlog $BACKLOG; new $MODE per request, $CONNS connections, ${DURATION}s"
echo "RSS at start: $(rss) MiB"
printf '%8s %10s %12s %14s %14s %16s %14s\n' seconds "RSS MiB" requests "disk entries" "disk skipped" "memory entries" "memory MiB"
taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$run/flood.lua" http://127.0.0.1:18190/ >"$run/wrk.out" &
wrk=$!
peak=0 t=0
while kill -0 "$wrk" 2>/dev/null; do
    sleep "$STEP"; t=$((t + STEP))
    r=$(rss); ((r > peak)) && peak=$r
    read -r total disk skipped mem mem_mib < <(stats)
    printf '%8s %10s %12s %14s %14s %16s %14s\n' "$t" "$r" "$total" "$disk" "$skipped" "$mem" "$mem_mib"
done
sleep 2
read -r total disk skipped mem mem_mib < <(stats)
echo "peak RSS ${peak} MiB; after the flood $(rss) MiB with $disk entries on disk ($total requests, $skipped kept in memory only)"
