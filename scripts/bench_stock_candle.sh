#!/usr/bin/env bash
# Side by side: our ResNets, candle-transformers inside this workspace (sharing zoo's AVX-512 GEMM
# feature) and stock candle-transformers (benches/stock-candle, its own workspace and target dir, so
# the feature is not unified in). Not run by CI (a second cold build of Candle); see benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
(cd benches/stock-candle && CARGO_TARGET_DIR="$target/stock-candle" cargo build --release --quiet)
cargo build --release --quiet -p zoo-benches --bin compare --bin fma_peak
# How busy the (shared) machine is right now: the FMA peak drops from ~320 to ~170 GFLOP/s when another
# tenant holds the cores, and every timing below with it.
"$target/release/fma_peak" | tail -1
"$target/release/compare" --stock-bin "$target/stock-candle/release/stock-candle-bench" "$@"
