# "direct": the fast origin itself, no proxy (single-worker nginx static ceiling).
# It is started by compare.sh as the origin ("origin" process), so
# start/stop are no-ops. For S6 it points at the slow origin directly (no
# cache: every request reaches it).
register_target direct "$FAST_PORT" h2="$FAST_H2_PORT" herd="$SLOW_PORT" proc=origin
start_direct() { :; }
stop_direct() { :; }
