#!/usr/bin/env bash
# `resnet` as a dependency, from outside the workspace (examples/consumer-lean, default-features = false):
# builds and runs it, and fails when its normal dependency tree holds an HTTP, TLS, async-runtime or C image
# crate. Prints the crate counts of the lean and the default build for the README.
set -euo pipefail
cd "$(dirname "$0")/.."
# Share the workspace's compiled dependencies (same profiles, same versions).
export CARGO_TARGET_DIR="$PWD/target"
lean=examples/consumer-lean/Cargo.toml
full=examples/consumer/Cargo.toml
[ -f examples/consumer-lean/Cargo.lock ] || cp Cargo.lock examples/consumer-lean/Cargo.lock
tree=$(cargo tree -e normal --prefix none --manifest-path "$lean" | sed 's/ (\*)//' | sort -u)
forbidden='^(reqwest|hyper|hyper-util|h2|rustls|native-tls|openssl|openssl-sys|tokio|hf-hub|mozjpeg|mozjpeg-sys|image|png|jpeg-decoder|zune-jpeg|indicatif) '
if bad=$(printf '%s\n' "$tree" | grep -E "$forbidden"); then
    echo "error: resnet with default-features = false depends on:" >&2
    printf '%s\n' "$bad" >&2
    exit 1
fi
n_lean=$(printf '%s\n' "$tree" | wc -l)
n_full=$(cargo tree -e normal --prefix none --manifest-path "$full" | sed 's/ (\*)//' | sort -u | wc -l)
echo "cargo tree -e normal: resnet default-features = false: $n_lean crates; default features: $n_full crates"
# It builds and runs (a forward pass) on its own resolution of features. On CI this is a second build of
# Candle (its features differ from the workspace's), so CI may ask for a type check only.
if [ "${ZOO_LEAN_CHECK_ONLY:-0}" = 1 ]; then
    cargo check -q --manifest-path "$lean"
else
    cargo run -q --manifest-path "$lean"
fi
