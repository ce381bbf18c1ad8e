#!/usr/bin/env bash
# Side by side: our ResNets, candle-transformers inside this workspace (sharing zoo's AVX-512 GEMM
# feature) and stock candle-transformers (benches/stock-candle, its own workspace and target dir, so
# the feature is not unified in). Not run by CI (a second cold build of Candle); see benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
(cd benches/stock-candle && CARGO_TARGET_DIR="$target/stock-candle" cargo build --release --quiet)
cargo build --release --quiet -p zoo-benches --bin compare
"$target/release/compare" --stock-bin "$target/stock-candle/release/stock-candle-bench" "$@"
