#!/usr/bin/env bash
# The differential test of the two HTTP/1.1 engines (tests/h1_differential.rs)
# at length: many more generated cases than CI runs, from a random seed printed
# first, so that a failure can be replayed with the same seed and count.
#
# Usage: benches/h1_fuzz.sh           (CASES=20000, SEED random)
#        SEED=0x1234 CASES=50000 benches/h1_fuzz.sh
# 2 to 2.5 s per thousand cases here (debug build), each sent twice to each engine.
set -euo pipefail
cd "$(dirname "$0")/.."
CASES=${CASES:-20000}
SEED=${SEED:-$(printf '0x%016x' "$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')")}
echo "h1 fuzz: seed $SEED, $CASES cases (replay: H1_FUZZ_SEED=$SEED H1_FUZZ_CASES=$CASES cargo test --test h1_differential)"
H1_FUZZ_SEED=$SEED H1_FUZZ_CASES=$CASES cargo test --test h1_differential -- --nocapture
