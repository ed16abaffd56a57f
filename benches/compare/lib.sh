# shellcheck shell=bash
# Helpers for compare.sh. Every process is started here and stopped by
# its own PID (never by name).

declare -a TARGET_NAMES=()
declare -A TARGET_PORT=() TARGET_H2PORT=() TARGET_TLSPORT=() TARGET_SLOWPORT=() TARGET_PROC=() TARGET_ONLY=()
declare -a SPAWNED=()

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# register_target NAME PORT [h2=PORT] [herd=PORT] [proc=SPAWN_NAME] [only="S5a S5b"]
#   PORT   HTTP/1.1 port of the target; it must route /slow/* to the slow origin
#          and everything else to the fast origin
#   h2=    port speaking HTTP/2 cleartext with prior knowledge (S7); default none
#   tls=   port speaking TLS (HTTP/1.1 and h2 by ALPN) with $RUN_DIR/tls.pem (S9-S11); default none
#   herd=  port used for S6 (default PORT); "direct" points it at the slow origin
#   proc=  name given to `spawn` for the target's main process: its process tree
#          is charged the server CPU time (default NAME)
#   only=  restrict the target to these scenarios (default: all)
# The target must also define shell functions start_NAME and stop_NAME.
register_target() {
    local name=$1 port=$2 kv
    shift 2
    TARGET_NAMES+=("$name")
    TARGET_PORT[$name]=$port
    TARGET_H2PORT[$name]=-
    TARGET_TLSPORT[$name]=-
    TARGET_SLOWPORT[$name]=$port
    TARGET_PROC[$name]=$name
    TARGET_ONLY[$name]=""
    for kv in "$@"; do
        case $kv in
        h2=*) TARGET_H2PORT[$name]=${kv#h2=} ;;
        tls=*) TARGET_TLSPORT[$name]=${kv#tls=} ;;
        herd=*) TARGET_SLOWPORT[$name]=${kv#herd=} ;;
        proc=*) TARGET_PROC[$name]=${kv#proc=} ;;
        only=*) TARGET_ONLY[$name]=${kv#only=} ;;
        *) die "register_target $name: unknown option $kv" ;;
        esac
    done
}

# target_runs TARGET SCENARIO : is TARGET measured in SCENARIO?
target_runs() {
    local only=${TARGET_ONLY[$1]}
    [[ -z $only || " $only " == *" $2 "* ]]
}

# render TEMPLATE OUT : substitute @VAR@ with the value of shell variable VAR
render() {
    local tmpl=$1 out=$2 content var
    content=$(<"$tmpl")
    for var in $(grep -o '@[A-Z0-9_]*@' "$tmpl" | sort -u | tr -d @); do
        [[ -v $var ]] || die "render $tmpl: variable $var not set"
        content=${content//"@$var@"/"${!var}"}
    done
    printf '%s\n' "$content" >"$out"
}

# spawn NAME CPU CMD... : start CMD in the background pinned to CPU, remember PID
spawn() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$RUN_DIR/$name.out" 2>&1 &
    echo $! >"$RUN_DIR/$name.pid"
    SPAWNED+=("$name")
    log "started $name pid=$! cpu=$cpu: $*"
}

# stop_spawned NAME [SIGNAL] : signal the remembered PID, wait, escalate to KILL
stop_spawned() {
    local name=$1 sig=${2:-TERM} pidf="$RUN_DIR/$1.pid" pid i
    [[ -f $pidf ]] || return 0
    pid=$(<"$pidf")
    if kill -0 "$pid" 2>/dev/null; then
        kill "-$sig" "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then log "$name pid=$pid did not exit, KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    wait "$pid" 2>/dev/null || true
    rm -f "$pidf"
}

# wait_port PORT [TIMEOUT_S]
wait_port() {
    local port=$1 t=${2:-20} i
    for i in $(seq 1 $((t * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "nothing listening on 127.0.0.1:$port after ${t}s"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
