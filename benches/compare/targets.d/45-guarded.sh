# "guarded": relais as the relais target runs it, plus the guard in GUARD_TOML,
# so that one run compares relais with and without it. Registered only when
# GUARD_TOML is set. scripts/bench-guard sets it to the busy guard of
# `cargo run --example busy-guard` (1,000 denied CIDR blocks, 50 regex rules and
# a per-address rate zone, none of which refuses the benchmark's requests).
GUARDED_PORT=${GUARDED_PORT:-18120}
GUARDED_ADMIN_PORT=${GUARDED_ADMIN_PORT:-18121}
GUARDED_TLS_PORT=${GUARDED_TLS_PORT:-18122}
if [[ -n ${GUARD_TOML:-} ]]; then
    [[ -r $GUARD_TOML ]] || die "GUARD_TOML=$GUARD_TOML cannot be read"
    register_target guarded "$GUARDED_PORT" h2="$GUARDED_PORT" tls="$GUARDED_TLS_PORT"
    start_guarded() { relais_start guarded "$GUARDED_PORT" "$GUARDED_ADMIN_PORT" "$GUARDED_TLS_PORT" "$GUARD_TOML"; }
    stop_guarded() { stop_spawned guarded TERM; }
fi
