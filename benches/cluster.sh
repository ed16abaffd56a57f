#!/usr/bin/env bash
# Sharding across three relais on this machine (not a timed test):
#  1. origin fetches per object: OBJECTS keys, each asked CLIENTS times at once on
#     each of the three nodes (a cold herd across the cluster); the origin answers
#     after DELAY_MS and counts what it was asked. Goal: 1.
#  2. CPU per request: a local hit (a key asked of its owner) against a forwarded
#     one (the same key asked of another node, which keeps no copy: it forwards
#     every request and its owner answers from its cache), both nodes' CPU
#     counted. wrk, CONNS connections, DURATION seconds each.
#
# Usage: benches/cluster.sh    (OBJECTS=200 CLIENTS=4 DELAY_MS=20 CONNS=8 DURATION=3)
# Needs wrk and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
OBJECTS=${OBJECTS:-200} CLIENTS=${CLIENTS:-4} DELAY_MS=${DELAY_MS:-20}
CONNS=${CONNS:-8} DURATION=${DURATION:-3}
bin=${RELAIS_BIN:-target/release/relais}
[[ -x $bin ]] || cargo build --release --quiet
run=$(mktemp -d /var/tmp/relais-cluster.XXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$run"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
origin=$(port); p=($(port) $(port) $(port))
python3 benches/compare/slow_origin.py --port "$origin" --delay-ms "$DELAY_MS" &
peers="n0 = \"127.0.0.1:${p[0]}\", n1 = \"127.0.0.1:${p[1]}\", n2 = \"127.0.0.1:${p[2]}\""
pids=()
for i in 0 1 2; do
    cat > "$run/n$i.toml" <<CONF
[server]
listen = ["127.0.0.1:${p[$i]}"]
[admin]
listen = "127.0.0.1:$(port)"
[log]
access = false
[cache]
disk_path = "$run/cache$i"
[upstreams.o]
servers = ["127.0.0.1:$origin"]
[[routes]]
upstream = "o"
[cluster]
node = "n$i"
peers = { $peers }
secret = "a-benchmark-secret-of-some-length"
CONF
    "$bin" run -c "$run/n$i.toml" 2>"$run/n$i.err" &
    pids+=($!)
done
for i in 0 1 2; do
    until curl -fso /dev/null -H 'Host: shop.test' "http://127.0.0.1:${p[$i]}/__count"; do sleep 0.1; done
done
sleep 2 # the peers' first health checks
curl -fso /dev/null "http://127.0.0.1:$origin/__reset"

python3 - "$OBJECTS" "$CLIENTS" "$origin" "${p[@]}" <<'PY'
import json, sys, threading, urllib.request
objects, clients, origin, ports = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def get(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": "shop.test"})
    urllib.request.urlopen(req, timeout=30).read()
for k in range(objects):
    path = f"/slow/object/{k}"
    barrier = threading.Barrier(clients * len(ports))
    def one(port):
        barrier.wait()
        get(port, path)
    threads = [threading.Thread(target=one, args=(p,)) for p in ports for _ in range(clients)]
    for t in threads: t.start()
    for t in threads: t.join()
counts = json.load(urllib.request.urlopen(f"http://127.0.0.1:{origin}/__count"))
fetches = sum(v for k, v in counts.items() if k.startswith("/slow/object/"))
more = sum(1 for k, v in counts.items() if k.startswith("/slow/object/") and v > 1)
print(f"origin fetches per object: {fetches / objects:.3f} ({fetches} for {objects} objects, "
      f"{clients * len(ports)} requests each at once over 3 nodes; {more} objects fetched more than once)")
PY

# A key n0 owns: the one n1 forwards (Cache-Status names the owner's answer).
for k in $(seq 0 100); do
    key="/slow/hot/$k"
    if curl -fsD - -o /dev/null -H 'Host: shop.test' "http://127.0.0.1:${p[1]}$key" | grep -qi 'detail=owner' \
        && curl -fsD - -o /dev/null -H 'Host: shop.test' "http://127.0.0.1:${p[0]}$key" | grep -qi 'cache-status:.*hit'; then
        break
    fi
done
cpu() { python3 benches/compare/proc_cpu.py "$@"; }
measure() { # name port: CPU of n0 and n1 per request
    local before after out reqs
    before=$(cpu "${pids[0]}" "${pids[1]}")
    out=$(wrk -t1 -c "$CONNS" -d "${DURATION}s" -H 'Host: shop.test' "http://127.0.0.1:$2$key")
    after=$(cpu "${pids[0]}" "${pids[1]}")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    python3 -c "import sys; b,a,r=map(int,sys.argv[2:5]); print(f'{sys.argv[1]}: {r} requests, {(a-b)/r:.1f} us CPU each (both nodes)')" \
        "$1" "$before" "$after" "$reqs"
}
measure "local hit (asked of its owner)" "${p[0]}"
measure "forwarded (asked of another node)" "${p[1]}"
