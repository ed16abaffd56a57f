#!/usr/bin/env bash
# compare.sh — relais side by side with nginx (proxy_cache) and Varnish under load,
# the harness behind every comparison table in the README's Performance section.
#
# One command from a clone (Debian): installs what is missing (nginx-light, varnish,
# wrk, nghttp2-client for h2load, curl, openssl; with sudo when not root), builds
# relais in release unless RELAIS_BIN names a binary, starts the origins and every
# target, measures, and prints the tables.
#
# All traffic is loopback (127.0.0.1). Servers under test (and the origins) are
# pinned to SERVER_CPU, the load generator to CLIENT_CPU. Targets are measured
# interleaved (A B C A B C ...) REPEATS times per scenario; the table shows the
# median over repeats, the req/s spread across repeats, the server's CPU time per
# request and ratios to BASELINE.
#
# Targets live in targets.d/*.sh (direct, nginx, nginx-nolock, varnish, relais,
# guarded when GUARD_TOML is set, before when RELAIS_BEFORE_BIN is set); add one by dropping in a file that calls
# register_target and defines start_/stop_ functions (targets.d/40-relais.sh is the model).
#
# Scenarios (server pinned to one core, wrk on the other; medians of interleaved repeats):
#   S1  cache hit, 1 KiB body, 50 keep-alive connections
#   S2  cache hit, 100 KiB body            S3  cache hit, 1 MiB body (compare CPU/request)
#   S4  cache hits spread over 10,000 distinct keys (all warmed first)
#   S5a uncacheable (no-store) pass-through, max throughput
#   S5b uncacheable pass-through at a fixed rate (latency)
#   S6  herd: 200 simultaneous requests for one cold key on a 500 ms origin; counts origin fetches
#   S7  cache hit, 1 KiB, HTTP/2 cleartext (h2load)
#   S8  cache hit, 100 KiB compressible HTML, client sends Accept-Encoding: gzip
#       (nginx: gzip on, level 5, over proxy_cache; compare CPU/request and MB/s)
#   S9  cache hit, 1 KiB, TLS + HTTP/1.1 keep-alive     S10 the same over TLS + HTTP/2 (h2load)
#   S11 cache hit, 1 KiB, a full TLS handshake per request (Connection: close)
#   A target without TLS or compression support is skipped in those scenarios.
#
# Knobs (env): DURATION=8 WARMUP=2 REPEATS=3 CONNS=50 RATE=2000 RATE_CONNS=20
#   H2_CLIENTS=10 H2_STREAMS=10 NKEYS=10000 HERD_N=200 SLOW_DELAY_MS=500
#   SERVER_CPU=1 CLIENT_CPU=0 ORIGIN_CPU=$SERVER_CPU BASELINE=nginx
#   SCENARIOS="S1 S2 S3 S4 S5a S5b S6 S7 S8 S9 S10 S11" TARGETS="direct nginx nginx-nolock varnish relais"
#   RELAIS_BIN=(built: target/release/relais) RELAIS_LOG=warn GUARD_TOML=(unset)
#   RELAIS_BEFORE_BIN=(unset: another relais build, measured as the target "before")
#   RUN_DIR=/var/tmp/relais-compare FAST_PORT=18080 SLOW_PORT=18081 FAST_H2_PORT=18082
#   NGINX_PORT=18090 NGINX_H2_PORT=18091 VARNISH_PORT=18092 RELAIS_PORT=18100 GUARDED_PORT=18120
#
# Usage: benches/compare/compare.sh 2>&1 | tee run.txt                  (everything, about 25 min)
#        TARGETS="nginx relais" SCENARIOS="S1 S6" benches/compare/compare.sh   (a quick subset)
#        RELAIS_BIN=/path/to/other/relais benches/compare/compare.sh          (another build, no cargo)
#        scripts/bench-guard                  (S1 through relais with and without a busy guard)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/../.." && pwd)
# nginx and varnishd live in /usr/sbin, which a user's PATH often lacks
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    exit 0
fi

# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"

DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
REPEATS=${REPEATS:-3}
CONNS=${CONNS:-50}
RATE=${RATE:-2000}
RATE_CONNS=${RATE_CONNS:-20}
H2_CLIENTS=${H2_CLIENTS:-10}
H2_STREAMS=${H2_STREAMS:-10}
NKEYS=${NKEYS:-10000}
HERD_N=${HERD_N:-200}
SLOW_DELAY_MS=${SLOW_DELAY_MS:-500}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
ORIGIN_CPU=${ORIGIN_CPU:-$SERVER_CPU}
SCENARIOS=${SCENARIOS:-"S1 S2 S3 S4 S5a S5b S6 S7 S8 S9 S10 S11"}
BASELINE=${BASELINE:-nginx}
FAST_PORT=${FAST_PORT:-18080}
SLOW_PORT=${SLOW_PORT:-18081}
FAST_H2_PORT=${FAST_H2_PORT:-18082}
RUN_DIR=${RUN_DIR:-/var/tmp/relais-compare}
NGINX_USER=${NGINX_USER:-www-data}

# ---------------------------------------------------------------- install
ensure_deps() {
    local need=() sudo=""
    command -v nginx >/dev/null || need+=(nginx-light)
    command -v varnishd >/dev/null || need+=(varnish)
    command -v wrk >/dev/null || need+=(wrk)
    command -v h2load >/dev/null || need+=(nghttp2-client)
    command -v curl >/dev/null || need+=(curl)
    command -v taskset >/dev/null || need+=(util-linux)
    command -v python3 >/dev/null || need+=(python3)
    command -v openssl >/dev/null || need+=(openssl)
    if ((${#need[@]})); then
        command -v apt-get >/dev/null || die "missing ${need[*]} (Debian package names); install them"
        if [[ $(id -u) != 0 ]]; then
            command -v sudo >/dev/null || die "missing ${need[*]}; not root and no sudo to install them"
            sudo=sudo
        fi
        log "installing: ${need[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    local cpu
    for cpu in "$SERVER_CPU" "$CLIENT_CPU" "$ORIGIN_CPU"; do
        taskset -c "$cpu" true 2>/dev/null || die "cannot pin to CPU $cpu (nproc=$(nproc)); set SERVER_CPU, CLIENT_CPU, ORIGIN_CPU"
    done
}

# relais in release from this clone, unless RELAIS_BIN names a binary or no
# relais target is measured
build_relais() {
    [[ -z ${RELAIS_BIN:-} ]] || return 0
    [[ -z ${TARGETS:-} || " $TARGETS " == *" relais "* || " $TARGETS " == *" guarded "* ]] || return 0
    command -v cargo >/dev/null || die "no cargo to build relais (install Rust, or set RELAIS_BIN)"
    log "building relais (cargo build --release)"
    (cd "$ROOT" && cargo build --release --locked --bin relais) || die "cargo build failed"
    RELAIS_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/relais
}

# ---------------------------------------------------------------- run dir
prepare_run_dir() {
    if [[ -e $RUN_DIR ]]; then
        [[ -f $RUN_DIR/.relais-compare ]] || die "$RUN_DIR exists and is not a run dir of compare.sh"
        # a previous run that was interrupted: stop what it recorded, by PID,
        # only if that PID still runs one of our commands for this run dir
        local pidf pid
        for pidf in "$RUN_DIR"/*.pid; do
            [[ -f $pidf ]] || continue
            pid=$(<"$pidf")
            if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -e "$RUN_DIR" -e slow_origin.py; then
                log "stopping leftover pid $pid from $pidf"
                kill "$pid" 2>/dev/null || true
                sleep 1
            fi
        done
        rm -rf "$RUN_DIR"
    fi
    mkdir -p "$RUN_DIR"
    chmod 755 "$RUN_DIR"
    touch "$RUN_DIR/.relais-compare"
    if [[ $(id -u) == 0 ]]; then NGINX_USER_LINE="user $NGINX_USER;"; else NGINX_USER_LINE=""; fi
    RUN=$RUN_DIR
    python3 "$BENCH_DIR/gen_content.py" "$RUN_DIR/www" "$NKEYS" >&2
    chmod -R a+rX "$RUN_DIR/www"
    # one self-signed certificate for every TLS target (S9-S11)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$RUN_DIR/tls.key" -out "$RUN_DIR/tls.pem" 2>/dev/null
    chmod 644 "$RUN_DIR/tls.key" "$RUN_DIR/tls.pem"
}

cleanup() {
    local rc=$? i t
    set +e
    for ((i = ${#ACTIVE[@]} - 1; i >= 0; i--)); do
        t=${ACTIVE[$i]}
        "stop_$t" 2>/dev/null
    done
    for ((i = ${#SPAWNED[@]} - 1; i >= 0; i--)); do stop_spawned "${SPAWNED[$i]}"; done
    exit $rc
}

# ---------------------------------------------------------------- origins
start_origins() {
    mkdir -p "$RUN_DIR/nginx-origin-tmp"
    [[ $(id -u) == 0 ]] && chown -R "$NGINX_USER" "$RUN_DIR/nginx-origin-tmp"
    render "$BENCH_DIR/conf/nginx-origin.conf.in" "$RUN_DIR/nginx-origin.conf"
    nginx -t -q -e "$RUN_DIR/nginx-origin.error.log" -c "$RUN_DIR/nginx-origin.conf" || die "nginx-origin.conf invalid"
    spawn origin "$ORIGIN_CPU" nginx -e "$RUN_DIR/nginx-origin.error.log" -c "$RUN_DIR/nginx-origin.conf"
    spawn slow-origin "$ORIGIN_CPU" python3 "$BENCH_DIR/slow_origin.py" --port "$SLOW_PORT" --delay-ms "$SLOW_DELAY_MS"
    wait_port "$FAST_PORT"
    wait_port "$SLOW_PORT"
}

# ---------------------------------------------------------------- measuring
RESULTS=""
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }

# CPU time (us) of a target's process tree (proc_cpu.py walks /proc)
srv_cpu_us() { python3 "$BENCH_DIR/proc_cpu.py" "$(<"$RUN_DIR/${TARGET_PROC[$1]}.pid")"; }

wrk_once() { # CONNS SECONDS SCRIPT URL [LUA ARGS...]
    local c=$1 d=$2 s=$3 u=$4
    shift 4
    if (($#)); then
        taskset -c "$CLIENT_CPU" wrk -t1 -c"$c" -d"${d}s" --timeout 10s -s "$s" "$u" -- "$@"
    else
        taskset -c "$CLIENT_CPU" wrk -t1 -c"$c" -d"${d}s" --timeout 10s -s "$s" "$u"
    fi
}

h2_once() { # SECONDS URL [LOGFILE]  (https URLs negotiate h2 by ALPN)
    local d=$1 u=$2 lf=${3:-}
    taskset -c "$CLIENT_CPU" h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$d" ${lf:+--log-file="$lf"} "$u"
}

brief() { # RESULT line -> short human form
    awk '{ for (i=2;i<=NF;i++){ split($i,kv,"="); v[kv[1]]=kv[2] }
           d=v["duration_us"]/1e6; if (d==0) d=1; n=v["requests"]; if (n==0) n=1
           printf "%.0f req/s %.1f MB/s p50=%dus p99=%dus err=%d cpu cl/sv=%s/%s%% srv=%.1fus/req", v["requests"]/d, v["bytes"]/d/1e6,
                  v["p50_us"], v["p99_us"], v["err_connect"]+v["err_read"]+v["err_write"]+v["err_status"]+v["err_timeout"],
                  v["cpu_client"], v["cpu_server"], v["srv_cpu_us"]/n }' <<<"$1"
}

# measure SC TARGET REP KIND URL [extra]   KIND: wrk:SCRIPT:CONNS | h2
measure() {
    local sc=$1 t=$2 rep=$3 kind=$4 url=$5
    shift 5
    local out line s0 s1 ccpu TIMEFORMAT='%U %S'
    case $kind in
    wrk:*)
        local script=${kind#wrk:} conns
        conns=${script##*:}
        script=${script%:*}
        wrk_once "$conns" "$WARMUP" "$script" "$url" "$@" >/dev/null 2>&1 || true
        s0=$(srv_cpu_us "$t")
        { time wrk_once "$conns" "$DURATION" "$script" "$url" "$@" >"$RUN_DIR/wrk.out" 2>&1; } 2>"$RUN_DIR/time.out" || true
        s1=$(srv_cpu_us "$t")
        out=$(<"$RUN_DIR/wrk.out")
        line=$(grep -m1 '^RESULT' <<<"$out") || line=""
        ;;
    h2)
        h2_once "$WARMUP" "$url" >/dev/null 2>&1 || true
        rm -f "$RUN_DIR/h2.log"
        s0=$(srv_cpu_us "$t")
        { time h2_once "$DURATION" "$url" "$RUN_DIR/h2.log" >"$RUN_DIR/h2.out" 2>&1; } 2>"$RUN_DIR/time.out" || true
        s1=$(srv_cpu_us "$t")
        out=$(<"$RUN_DIR/h2.out")
        line=$(python3 "$BENCH_DIR/h2stats.py" "$RUN_DIR/h2.log" "$RUN_DIR/h2.out" 2>&1) || line=""
        ;;
    esac
    if [[ $line != RESULT* ]]; then
        log "$sc $t rep$rep: no result; output was:"
        printf '%s\n' "$out" | tail -n 20 >&2
        return 0
    fi
    ccpu=$(awk '{printf "%.0f", ($1+$2)*1e6}' "$RUN_DIR/time.out")
    # utilisation of one core over the measured window, client (wrk/h2load) and server tree
    line+=$(awk -v c="$ccpu" -v s=$((s1 - s0)) '{ for (i=2;i<=NF;i++){ split($i,kv,"="); v[kv[1]]=kv[2] }
        d=v["duration_us"]; printf " cpu_client=%.0f cpu_server=%.0f srv_cpu_us=%d", 100*c/d, 100*s/d, s }' <<<"$line")
    record "$sc" "$t" "$rep" "$line"
    log "$sc $t rep$rep: $(brief "$line")"
}

# scenario_loop SC PATH KIND [extra...] : REPEATS x (every active target), interleaved
scenario_loop() {
    local sc=$1 path=$2 kind=$3 rep t port
    shift 3
    for rep in $(seq 1 "$REPEATS"); do
        for t in "${ACTIVE[@]}"; do
            target_runs "$t" "$sc" || continue
            local scheme=http
            if [[ $sc == S9 || $sc == S10 || $sc == S11 ]]; then
                port=${TARGET_TLSPORT[$t]}
                scheme=https
                if [[ $port == - ]]; then
                    ((rep == 1)) && log "$sc $t: no TLS port, skipped"
                    continue
                fi
            elif [[ $kind == h2 ]]; then
                port=${TARGET_H2PORT[$t]}
                if [[ $port == - ]]; then
                    ((rep == 1)) && log "$sc $t: no h2c port, skipped"
                    continue
                fi
            else
                port=${TARGET_PORT[$t]}
            fi
            if [[ $sc == S8 ]] && ! target_compresses "$t"; then
                ((rep == 1)) && log "$sc $t: no compression, skipped"
                continue
            fi
            measure "$sc" "$t" "$rep" "$kind" "$scheme://127.0.0.1:$port$path" "$@"
        done
    done
}

lua_script() { # NAME -> combined script path (report.lua + NAME.lua)
    local out="$RUN_DIR/wrk-$1.lua"
    cat "$BENCH_DIR/lua/report.lua" "$BENCH_DIR/lua/$1.lua" >"$out"
    echo "$out"
}

run_scenario() {
    local sc=$1 t rep
    case $sc in
    S1) scenario_loop S1 /1k "wrk:$(lua_script plain):$CONNS" ;;
    S2) scenario_loop S2 /100k "wrk:$(lua_script plain):$CONNS" ;;
    S3) scenario_loop S3 /1m "wrk:$(lua_script plain):$CONNS" ;;
    S4)
        for t in "${ACTIVE[@]}"; do
            target_runs "$t" S4 || continue
            log "S4 warming $NKEYS keys via $t: $(taskset -c "$CLIENT_CPU" python3 "$BENCH_DIR/warm_keys.py" "${TARGET_PORT[$t]}" "$NKEYS")"
        done
        scenario_loop S4 /k/00000 "wrk:$(lua_script random_keys):$CONNS" "$NKEYS"
        ;;
    S5a) scenario_loop S5a /nostore/1k "wrk:$(lua_script plain):$CONNS" ;;
    S5b) scenario_loop S5b /nostore/1k "wrk:$(lua_script fixed_rate):$RATE_CONNS" "$RATE" "$RATE_CONNS" ;;
    S6)
        for rep in $(seq 1 "$REPEATS"); do
            for t in "${ACTIVE[@]}"; do
                target_runs "$t" S6 || continue
                local path="/slow/herd-$t-$rep-$$-$RANDOM" line
                line=$(taskset -c "$CLIENT_CPU" python3 "$BENCH_DIR/herd.py" --port "${TARGET_SLOWPORT[$t]}" \
                    --path "$path" --n "$HERD_N" --count-url "http://127.0.0.1:$SLOW_PORT/__count" 2>&1) || true
                if [[ $line == RESULT* ]]; then
                    record S6 "$t" "$rep" "$line"
                    log "S6 $t rep$rep: $line"
                else
                    log "S6 $t rep$rep failed: $line"
                fi
                sleep 1
            done
        done
        ;;
    S7) scenario_loop S7 /1k h2 ;;
    S8) scenario_loop S8 /html/100k "wrk:$(lua_script gzip):$CONNS" ;;
    S9) scenario_loop S9 /1k "wrk:$(lua_script plain):$CONNS" ;;
    S10) scenario_loop S10 /1k h2 ;;
    S11) scenario_loop S11 /1k "wrk:$(lua_script close):$CONNS" ;;
    *) die "unknown scenario $sc" ;;
    esac
}

# target_compresses TARGET : does it answer a gzip client with gzip? (a target may lack compression)
target_compresses() {
    local enc
    curl -s -o /dev/null -H 'Accept-Encoding: gzip' "http://127.0.0.1:${TARGET_PORT[$1]}/html/100k"
    enc=$(curl -s -o /dev/null -D - -H 'Accept-Encoding: gzip' "http://127.0.0.1:${TARGET_PORT[$1]}/html/100k" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-encoding"{print $2}')
    [[ $enc == gzip ]]
}

sanity_check() {
    local t port hdr
    for t in "${ACTIVE[@]}"; do
        port=${TARGET_PORT[$t]}
        curl -s -o /dev/null "http://127.0.0.1:$port/1k"
        hdr=$(curl -s -o /dev/null -D - "http://127.0.0.1:$port/1k" | tr -d '\r' | grep -i -E '^(HTTP/|x-cache|cache-status|cache-control|content-length)' | tr '\n' ' ')
        log "check $t /1k (2nd): $hdr"
        curl -s -o /dev/null "http://127.0.0.1:$port/nostore/1k"
        hdr=$(curl -s -o /dev/null -D - "http://127.0.0.1:$port/nostore/1k" | tr -d '\r' | grep -i -E '^(HTTP/|x-cache|cache-status|cache-control)' | tr '\n' ' ')
        log "check $t /nostore/1k (2nd): $hdr"
        [[ $hdr == HTTP/1.1\ 200* ]] || die "$t does not answer 200 on /nostore/1k"
        if [[ ${TARGET_H2PORT[$t]} != - ]]; then
            log "check $t h2c: $(h2load -n 2 -c 1 "http://127.0.0.1:${TARGET_H2PORT[$t]}/1k" 2>&1 | grep -E '^requests:' || echo FAILED)"
        fi
        if [[ ${TARGET_TLSPORT[$t]} != - ]]; then
            log "check $t tls: $(curl -s -o /dev/null -w 'h%{http_version} %{http_code}' --cacert "$RUN_DIR/tls.pem" "https://127.0.0.1:${TARGET_TLSPORT[$t]}/1k") h2: $(curl -s -o /dev/null -w '%{http_version}' --http2 --cacert "$RUN_DIR/tls.pem" "https://127.0.0.1:${TARGET_TLSPORT[$t]}/1k")"
        fi
        log "check $t gzip /html/100k: $(target_compresses "$t" && echo yes || echo no)"
    done
}

# ---------------------------------------------------------------- main
main() {
    ensure_deps
    build_relais
    local all_targets f t
    prepare_run_dir
    RESULTS=$RUN_DIR/results.tsv
    : >"$RESULTS"
    ACTIVE=()
    trap cleanup EXIT INT TERM

    for f in "$BENCH_DIR"/targets.d/*.sh; do
        # shellcheck source=/dev/null
        source "$f"
    done
    all_targets=${TARGETS:-${TARGET_NAMES[*]}}
    for t in $all_targets; do
        [[ -v TARGET_PORT[$t] ]] || die "unknown target $t (registered: ${TARGET_NAMES[*]})"
    done
    for p in "$FAST_PORT" "$SLOW_PORT" "$FAST_H2_PORT"; do port_free "$p" || die "port $p busy"; done
    for t in $all_targets; do
        [[ $t == direct ]] && continue
        port_free "${TARGET_PORT[$t]}" || die "port ${TARGET_PORT[$t]} ($t) busy"
    done

    echo "== relais compare $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: nproc=$(nproc) kernel=$(uname -r) cpu='$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')' mem=$(free -g | awk '/^Mem:/{print $2}')GiB loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "tools: $(nginx -v 2>&1 | sed 's/.*: //') | $(varnishd -V 2>&1 | head -1 | grep -o 'varnish-[0-9.]*') | wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}') | h2load $(h2load --version | awk '{print $2}')"
    echo "params: duration=${DURATION}s warmup=${WARMUP}s repeats=$REPEATS conns=$CONNS (wrk -t1) rate=${RATE}/s over $RATE_CONNS conns h2=${H2_CLIENTS}x${H2_STREAMS} streams keys=$NKEYS herd=$HERD_N slow_delay=${SLOW_DELAY_MS}ms server_cpu=$SERVER_CPU client_cpu=$CLIENT_CPU origin_cpu=$ORIGIN_CPU"
    if [[ -x ${RELAIS_BIN:-} ]]; then
        echo "relais: $RELAIS_BIN ($("$RELAIS_BIN" --version)); this clone at $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "?")"
    fi
    echo "targets: $all_targets   baseline: $BASELINE   scenarios: $SCENARIOS"

    start_origins
    for t in $all_targets; do
        ACTIVE+=("$t")
        "start_$t"
    done
    sanity_check

    for sc in $SCENARIOS; do
        log "=== scenario $sc"
        run_scenario "$sc"
    done

    echo
    echo "== results: median of $REPEATS repeats; spread = (max-min)/median of req/s; MB = 1e6 bytes;"
    echo "   cl%/sv% = CPU used by the load generator / by the target's process tree, % of one core over the window;"
    echo "   us/req = target's CPU per request (least sensitive to other load on the box); ratios are vs $BASELINE"
    python3 "$BENCH_DIR/summarize.py" "$RESULTS" "$BASELINE" "${ACTIVE[*]}" "$SCENARIOS"
    echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "raw results: $RESULTS"
}

main "$@"
