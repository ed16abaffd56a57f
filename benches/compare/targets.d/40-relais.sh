# relais from RELAIS_BIN (compare.sh builds this clone in release when it is not
# given). Set up as nginx and Varnish are: /slow/ to the slow origin, everything
# else to the fast origin, h2c (prior knowledge) on the same port, TLS with the
# run's certificate on its own port (S9-S11), gzip (S8, as nginx's `gzip on`),
# no access log (nginx: access_log off) and keep-alive connections not cut after
# 1,000 requests (nginx: keepalive_requests 1000000).
RELAIS_BIN=${RELAIS_BIN:-$ROOT/target/release/relais}
RELAIS_PORT=${RELAIS_PORT:-18100}
RELAIS_ADMIN_PORT=${RELAIS_ADMIN_PORT:-18101}
RELAIS_TLS_PORT=${RELAIS_TLS_PORT:-18102}
register_target relais "$RELAIS_PORT" h2="$RELAIS_PORT" tls="$RELAIS_TLS_PORT"

# relais_config NAME PORT ADMIN_PORT TLS_PORT [GUARD_TOML] : write and check $RUN_DIR/NAME.toml;
# GUARD_TOML's tables are added, its [guard] keys beside the one set here
relais_config() {
    local name=$1 port=$2 admin=$3 tls=$4 guard=${5:-} conf="$RUN_DIR/$1.toml"
    cat >"$conf" <<CONF
[server]
listen = ["127.0.0.1:$port"]

[server.tls]
listen = ["127.0.0.1:$tls"]

[[server.tls.certificates]]
cert = "$RUN_DIR/tls.pem"
key = "$RUN_DIR/tls.key"

[admin]
listen = "127.0.0.1:$admin"
token = "bench"

[log]
access = false

[cache]
memory_capacity = "512MiB"
disk_path = "$RUN_DIR/$name-cache"
disk_capacity = "4GiB"

[compression]
enabled = true
encodings = ["gzip"]
min_length = "1KiB"

[upstreams.fast]
servers = ["127.0.0.1:$FAST_PORT"]

[upstreams.slow]
servers = ["127.0.0.1:$SLOW_PORT"]

[[routes]]
path = "/slow/"
upstream = "slow"

[[routes]]
path = "/"
upstream = "fast"

CONF
    if [[ -n $guard ]] && grep -qx '\[guard\]' "$guard"; then
        sed '/^\[guard\]$/a max_requests_per_connection = 1000000' "$guard"
    else
        printf '[guard]\nmax_requests_per_connection = 1000000\n\n'
        [[ -z $guard ]] || cat "$guard"
    fi >>"$conf"
    "$RELAIS_BIN" check --config "$conf" >"$RUN_DIR/$name.check" 2>&1 ||
        { cat "$RUN_DIR/$name.check" >&2; die "relais check refused $conf"; }
}

# relais_start NAME PORT ADMIN_PORT TLS_PORT [GUARD_TOML]
relais_start() {
    [[ -x $RELAIS_BIN ]] || die "no relais executable at $RELAIS_BIN (set RELAIS_BIN, or leave it unset to build one)"
    rm -rf "$RUN_DIR/$1-cache"
    relais_config "$@"
    RUST_LOG=${RELAIS_LOG:-warn} spawn "$1" "$SERVER_CPU" "$RELAIS_BIN" run --config "$RUN_DIR/$1.toml"
    wait_port "$2"
}
start_relais() { relais_start relais "$RELAIS_PORT" "$RELAIS_ADMIN_PORT" "$RELAIS_TLS_PORT"; }
stop_relais() { stop_spawned relais TERM; }
