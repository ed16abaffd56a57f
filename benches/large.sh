#!/usr/bin/env bash
# One large object through the disk tier: a miss that streams SIZE bytes to disk
# while the client reads them, then a hit and a range served from the file.
# Prints each transfer's time and relais's peak RSS (VmHWM), which stays flat
# whatever SIZE is: nothing holds the body whole.
#
# Usage: benches/large.sh        (SIZE=2GiB in bytes: SIZE=$((2 << 30)))
# Needs python3 (the origin) and curl; takes 2 × SIZE of free disk under /var/tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-$((2 << 30))}
cargo build --release --quiet
run=$(mktemp -d /var/tmp/relais-large.XXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$run"' EXIT
# The object: SIZE bytes of a repeating pattern (not zeros, not sparse).
python3 - "$run/big" "$SIZE" <<'PY'
import sys
piece = bytes(range(251)) * 4177  # about 1 MiB
with open(sys.argv[1], "wb") as f:
    left = int(sys.argv[2])
    while left:
        n = min(left, len(piece)); f.write(piece[:n]); left -= n
PY
cat > "$run/origin.py" <<'PY'
import http.server, os, sys
class Big(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):
        self.send_header("Cache-Control", "public, max-age=3600")
        super().end_headers()
    def log_message(self, *a): pass
os.chdir(sys.argv[1])
http.server.ThreadingHTTPServer(("127.0.0.1", 18281), Big).serve_forever()
PY
python3 "$run/origin.py" "$run" & sleep 0.5
cat > "$run/relais.toml" <<CONF
[server]
listen = ["127.0.0.1:18280"]
[admin]
listen = "127.0.0.1:18289"
[cache]
disk_path = "$run/cache"
disk_capacity = "$((SIZE * 2))"
max_object_size = "$((SIZE + 1))"
[upstreams.o]
servers = ["127.0.0.1:18281"]
[[routes]]
upstream = "o"
CONF
target/release/relais run -c "$run/relais.toml" >"$run/relais.log" 2>&1 &
pid=$!
for _ in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:18289/health && break; sleep 0.1; done
kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
echo "relais at start: RSS $(kib VmRSS) KiB"
fetch() {  # $1: label, then curl arguments; checks the bytes against the origin's file
    local t0 t1 status
    t0=$(date +%s.%N)
    status=$(curl -sS -D "$run/head" "${@:2}" http://127.0.0.1:18280/big -o "$run/got" -w '%{http_code}')
    t1=$(date +%s.%N)
    printf '%-5s %s in %.1f s, %s\n' "$1" "$status" "$(echo "$t1 - $t0" | bc)" \
        "$(grep -i '^cache-status' "$run/head" | tr -d '\r')"
}
fetch miss
cmp -s "$run/got" "$run/big" && echo "      same bytes as the origin"
for _ in $(seq 600); do grep -q '^relais_cache_disk_entries 1' <(curl -s http://127.0.0.1:18289/metrics) && break; sleep 0.1; done
fetch hit
cmp -s "$run/got" "$run/big" && echo "      same bytes as the origin"
fetch range -H "Range: bytes=$((SIZE - 1000))-"
cmp -s "$run/got" <(tail -c 1000 "$run/big") && echo "      the last 1000 bytes"
rm -f "$run/got"
echo "relais peak RSS: $(kib VmHWM) KiB, now $(kib VmRSS) KiB, for an object of $((SIZE >> 20)) MiB"
kill "$pid"; wait "$pid" 2>/dev/null || true
