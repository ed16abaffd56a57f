# "before": another relais binary (RELAIS_BEFORE_BIN, say a build of main from
# before a change), set up as the relais target is, so that one run measures a
# change against what it replaces. Registered only when RELAIS_BEFORE_BIN is set:
#   RELAIS_BEFORE_BIN=/tmp/relais-main TARGETS="nginx relais before" benches/compare/compare.sh
BEFORE_PORT=${BEFORE_PORT:-18130}
BEFORE_ADMIN_PORT=${BEFORE_ADMIN_PORT:-18131}
BEFORE_TLS_PORT=${BEFORE_TLS_PORT:-18132}
if [[ -n ${RELAIS_BEFORE_BIN:-} ]]; then
    [[ -x $RELAIS_BEFORE_BIN ]] || die "RELAIS_BEFORE_BIN=$RELAIS_BEFORE_BIN is not an executable"
    register_target before "$BEFORE_PORT" h2="$BEFORE_PORT" tls="$BEFORE_TLS_PORT"
    start_before() { RELAIS_BIN=$RELAIS_BEFORE_BIN relais_start before "$BEFORE_PORT" "$BEFORE_ADMIN_PORT" "$BEFORE_TLS_PORT"; }
    stop_before() { stop_spawned before TERM; }
fi
