#!/usr/bin/env bash
# Cold fill over HTTP: every request a new key (a miss that is stored), relais
# with its disk tier against relais with memory only, in the same run,
# interleaved. relais and the origin (nginx, `return 200`) share SERVER_CPU,
# wrk runs on CLIENT_CPU. Prints misses per second for each and the ratio, and
# for the disk tier the share of the objects on disk AFTER seconds after the
# load stopped (the memory tier, relais's default 256MiB, holds what waits).
#
# Usage: benches/fill.sh        (DURATION=8 REPEATS=3 CONNS=32 BODY=1024 AFTER=10)
# (8 s at full speed here is about 100,000 new objects.)
# Needs wrk and nginx (installed from Debian if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8} REPEATS=${REPEATS:-3} CONNS=${CONNS:-32} BODY=${BODY:-1024} AFTER=${AFTER:-10}
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
if ((${#need[@]})); then
    sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet
run=$(mktemp -d /var/tmp/relais-fill.XXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$run"' EXIT
body=$(head -c "$BODY" /dev/zero | tr '\0' x)
cat > "$run/origin.conf" <<CONF
worker_processes 1; daemon off; pid $run/origin.pid; error_log $run/origin.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $run/t1; proxy_temp_path $run/t2; fastcgi_temp_path $run/t3;
  uwsgi_temp_path $run/t4; scgi_temp_path $run/t5;
  server { listen 127.0.0.1:18181;
    location / { add_header Cache-Control "public, max-age=3600"; return 200 "$body"; } } }
CONF
taskset -c "$SERVER_CPU" nginx -c "$run/origin.conf" -p "$run" & sleep 0.5
cat > "$run/unique.lua" <<'LUA'
local n, id = 0, 0
setup = function(thread) id = id + 1; thread:set("tid", id) end
request = function() n = n + 1; return wrk.format("GET", string.format("/f/%d/%d/%d", os.time(), tid, n)) end
LUA
config() {  # $1: disk path
    cat <<CONF
[server]
listen = ["127.0.0.1:18180"]
[admin]
listen = "127.0.0.1:18189"
[cache]
disk_path = "$1"
memory_capacity = "256MiB"
disk_capacity = "20GiB"
[upstreams.o]
servers = ["127.0.0.1:18181"]
[[routes]]
upstream = "o"
CONF
}
# Without a disk tier: a disk path that cannot be a directory.
config "/dev/null/none" > "$run/memory.toml"
measure() {  # $1: config name, $2: repeat -> misses per second
    # A new directory each time: deleting the last one's files right before would
    # slow ext4's inode allocation (it skips recently freed inodes) for the next.
    config "$run/disk-$2" > "$run/disk.toml"
    taskset -c "$SERVER_CPU" target/release/relais run -c "$run/$1.toml" >"$run/$1.log" 2>&1 &
    local pid=$!
    for _ in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:18189/health && break; sleep 0.1; done
    local out; out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$run/unique.lua" http://127.0.0.1:18180/)
    awk '/Requests\/sec/ {print $2}' <<<"$out"
    if [[ $1 == disk ]]; then
        # What reached the disk during the load, and AFTER seconds after it.
        local stored; stored=$(awk '/requests in/ {print $1}' <<<"$out")
        local m; m=$(curl -s http://127.0.0.1:18189/metrics)
        sleep "$AFTER"
        local later; later=$(curl -s http://127.0.0.1:18189/metrics)
        local at_end; at_end=$(awk '/^relais_cache_disk_entries / {print $2}' <<<"$m")
        local after; after=$(awk '/^relais_cache_disk_entries / {print $2}' <<<"$later")
        local skipped; skipped=$(awk '/^relais_cache_disk_writes_skipped_total/ {print $2}' <<<"$later")
        python3 - "$stored" "$at_end" "$after" "${skipped:-0}" "$AFTER" >&2 <<'PY'
import sys
stored, end, after, skipped, wait = (float(a) for a in sys.argv[1:])
print(f"  disk: {stored:.0f} objects stored; {end:.0f} on disk at the end of the load, "
      f"{after:.0f} ({after / stored:.1%}) {wait:.0f} s later; {skipped:.0f} never written")
PY
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
declare -A sum=([memory]=0 [disk]=0)
for r in $(seq "$REPEATS"); do
    for t in memory disk; do
        rate=$(measure "$t" "$r")
        echo "repeat $r $t: $rate misses/s"
        sum[$t]=$(python3 -c "print(${sum[$t]} + $rate)")
    done
done
python3 - "${sum[memory]}" "${sum[disk]}" "$REPEATS" <<'PY'
import sys
m, d, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"mean: memory only {m/n:.0f} misses/s, with the disk tier {d/n:.0f} misses/s, ratio {d/m:.2f}")
PY
