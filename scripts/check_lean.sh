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
for m in "$lean" "$full"; do
    lock="$(dirname "$m")/Cargo.lock"
    [ -f "$lock" ] || cp Cargo.lock "$lock"
done
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
cargo run -q --manifest-path "$lean"
