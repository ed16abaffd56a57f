# relais with a busy guard: the relais target's configuration plus 1,000
# denied CIDR blocks, 50 regex rules and a per-address rate zone, none of which
# refuses the benchmark's requests. Dropped into a copy of the shared bench's
# targets.d by scripts/bench-guard, so that S1 compares relais with and without it.
GUARDED_PORT=${GUARDED_PORT:-18120}
GUARDED_ADMIN_PORT=${GUARDED_ADMIN_PORT:-18121}
if [[ -x ${RELAIS_BIN:-} ]]; then
    register_target guarded "$GUARDED_PORT" h2="$GUARDED_PORT"
    start_guarded() {
        rm -rf "$RUN_DIR/guarded-cache"
        {
            cat <<CONF
[server]
listen = ["127.0.0.1:$GUARDED_PORT"]

[admin]
listen = "127.0.0.1:$GUARDED_ADMIN_PORT"
token = "bench"

[cache]
memory_capacity = "512MiB"
disk_path = "$RUN_DIR/guarded-cache"
disk_capacity = "4GiB"

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
            cat "$GUARD_TOML"
        } >"$RUN_DIR/guarded.toml"
        "$RELAIS_BIN" check --config "$RUN_DIR/guarded.toml" >/dev/null
        RUST_LOG=${RELAIS_LOG:-warn} spawn guarded "$SERVER_CPU" "$RELAIS_BIN" run --config "$RUN_DIR/guarded.toml"
        wait_port "$GUARDED_PORT"
    }
    stop_guarded() { stop_spawned guarded TERM; }
fi
