#!/usr/bin/env bash
# Long fuzzing runs of the targets in fuzz/ (see fuzz/src/lib.rs and docs/reliability.md).
#
#   scripts/fuzz_long.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 1800 s each; all five targets)
#
# With cargo-fuzz installed (`cargo install cargo-fuzz`), runs libFuzzer (coverage-guided) on the stable
# toolchain through RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only -Z flags), without a sanitizer
# (`-s none`: AddressSanitizer needs a nightly std), at the lowest CPU priority. The working corpus grows in
# target/fuzz-corpus/<target> (seeded from fuzz/corpus/<target>); crashes go to fuzz/artifacts/<target>/.
# Without cargo-fuzz, runs the stable mutation harness (tests/mutation.rs) with a random seed instead.
# Limits per input: 20 s, 2 GiB RSS, 1 GiB per allocation.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-1800}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(image safetensors pth keras npy)

if command -v cargo-fuzz >/dev/null 2>&1; then
  RUSTC_BOOTSTRAP=1 nice -n 19 cargo fuzz build --features libfuzzer -s none "${targets[@]/#/}" >/dev/null 2>&1 || true
  for t in "${targets[@]}"; do
    mkdir -p "target/fuzz-corpus/$t"
    echo "== $t: ${secs}s of libFuzzer"
    RUSTC_BOOTSTRAP=1 nice -n 19 cargo fuzz run --features libfuzzer -s none "$t" \
      "target/fuzz-corpus/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=1048576 \
      -print_final_stats=1 2>&1 | grep -E "^(#[0-9]+ +DONE|stat::|==|SUMMARY|.*(panicked|ERROR|deadly|crash-|timeout-|oom-))" || true
  done
else
  seed=${ZOO_FUZZ_SEED:-$RANDOM}
  for t in "${targets[@]}"; do
    echo "== $t: stable mutation harness, seed $seed, ${secs}s budget"
    # About 100 inputs a second per target in a debug build.
    ZOO_FUZZ_SEED=$seed ZOO_FUZZ_ITERS=$((secs * 100)) nice -n 19 cargo test -p zoo-fuzz --test mutation -- "$t"
  done
fi
