#!/usr/bin/env bash
# http3.sh — cache hits over HTTP/3 against the same over TLS + HTTP/2, from
# the same load generator (benches/h3load.rs): relais's CPU time per request
# and requests per second, for a 1 KiB and a 100 KiB object.
#
# relais (and its origin, which it asks once per object) is pinned to
# SERVER_CPU, the load generator to CLIENT_CPU. Runs are interleaved
# (h2 h3 h2 h3 ...) REPEATS times per size; the table shows medians.
#
# Knobs (env): RELAIS_BIN=target/release/relais DURATION=8 REPEATS=3 CONNS=10
#   STREAMS=10 SERVER_CPU=1 CLIENT_CPU=0 PORT=18300 RUN_DIR=/var/tmp/relais-h3
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RELAIS_BIN=${RELAIS_BIN:-$ROOT/target/release/relais}
DURATION=${DURATION:-8} REPEATS=${REPEATS:-3} CONNS=${CONNS:-10} STREAMS=${STREAMS:-10}
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0} PORT=${PORT:-18300}
RUN_DIR=${RUN_DIR:-/var/tmp/relais-h3}
ORIGIN_PORT=$((PORT + 1)) ADMIN_PORT=$((PORT + 2)) PLAIN_PORT=$((PORT + 3))

log() { echo "[http3] $*" >&2; }
[[ -x $RELAIS_BIN ]] || { log "no relais at $RELAIS_BIN: cargo build --release"; exit 1; }
log "building the load generator"
LOAD=$(cd "$ROOT" && cargo bench --bench h3load --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("executable") and m["target"]["name"] == "h3load": print(m["executable"])')
[[ -x $LOAD ]] || { log "the load generator did not build"; exit 1; }

rm -rf "$RUN_DIR" && mkdir -p "$RUN_DIR/www"
head -c 1024 /dev/urandom >"$RUN_DIR/www/1k"
head -c 102400 /dev/urandom >"$RUN_DIR/www/100k"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost" -keyout "$RUN_DIR/tls.key" -out "$RUN_DIR/tls.pem" 2>/dev/null
cat >"$RUN_DIR/relais.toml" <<CONF
[server]
listen = ["127.0.0.1:$PLAIN_PORT"]

[server.tls]
listen = ["127.0.0.1:$PORT"]
http3 = true

[[server.tls.certificates]]
cert = "$RUN_DIR/tls.pem"
key = "$RUN_DIR/tls.key"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
token = "bench"

[log]
access = false

[cache]
memory_capacity = "256MiB"
disk_path = "$RUN_DIR/cache"

[guard]
max_requests_per_connection = 1000000

[upstreams.origin]
servers = ["127.0.0.1:$ORIGIN_PORT"]

[[routes]]
path = "/"
upstream = "origin"
cache = { default_ttl = "1h" }
CONF

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
taskset -c "$SERVER_CPU" python3 -m http.server -b 127.0.0.1 -d "$RUN_DIR/www" "$ORIGIN_PORT" \
    >"$RUN_DIR/origin.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$ORIGIN_PORT/1k" && break
    sleep 0.1
done
RUST_LOG=warn taskset -c "$SERVER_CPU" "$RELAIS_BIN" run --config "$RUN_DIR/relais.toml" >"$RUN_DIR/relais.out" 2>&1 &
RELAIS=$!
pids+=("$RELAIS")
for _ in $(seq 100); do
    curl -sk -o /dev/null "https://localhost:$PORT/1k" --resolve "localhost:$PORT:127.0.0.1" && break
    sleep 0.1
done
for size in 1k 100k; do # fill the cache
    curl -sk -o /dev/null "https://localhost:$PORT/$size" --resolve "localhost:$PORT:127.0.0.1"
done

# CPU seconds relais has used (all threads): utime + stime.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$RELAIS/stat"; }

results="$RUN_DIR/results"
: >"$results"
for size in 1k 100k; do
    for rep in $(seq "$REPEATS"); do
        for proto in h2 h3; do
            before=$(cpu)
            out=$(taskset -c "$CLIENT_CPU" "$LOAD" "$proto" "127.0.0.1:$PORT" localhost "/$size" \
                "$CONNS" "$STREAMS" "$DURATION")
            after=$(cpu)
            read -r _ n _ failed _ _ _ secs _ rate <<<"$out"
            us=$(awk -v a="$before" -v b="$after" -v n="$n" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')
            log "$size $proto #$rep: $rate req/s, $us µs CPU per request ($n requests, $failed failed, ${secs}s)"
            echo "$size $proto $rate $us" >>"$results"
        done
    done
done

python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda size, proto, i: statistics.median(float(r[i]) for r in rows if r[0] == size and r[1] == proto)
print("| hit | HTTP/2 req/s | HTTP/3 req/s | HTTP/2 µs CPU/req | HTTP/3 µs CPU/req | HTTP/3 ÷ HTTP/2 CPU |")
print("|---|---:|---:|---:|---:|---:|")
for size in ("1k", "100k"):
    h2r, h3r, h2c, h3c = med(size, "h2", 2), med(size, "h3", 2), med(size, "h2", 3), med(size, "h3", 3)
    print(f"| {size} | {h2r:,.0f} | {h3r:,.0f} | {h2c:.1f} | {h3c:.1f} | {h3c / h2c:.2f}× |")
PY
