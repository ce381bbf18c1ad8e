#!/usr/bin/env bash
# The GPU path, ready for whoever is lent a GPU: one command.
#
#   scripts/gpu_check.sh --build-only   # compile `zoo` and the golden tests with `--features cuda` (no GPU needed)
#   scripts/gpu_check.sh                # then, on a machine with an NVIDIA GPU: the golden tests on cuda:0 and
#                                       # ResNet-50 at batch 1, 8 and 64 against PyTorch on the same GPU
#
# For a GPU machine with no Rust toolchain and no registry (a lent machine that only runs what it is given):
#
#   scripts/gpu_check.sh --pack DIR      # here: --build-only, then the two binaries (stripped) into DIR
#   scripts/gpu_check.sh --prebuilt DIR  # there: the same checks with DIR's binaries and the machine's own CUDA
#                                        # libraries (a system CUDA, or the NVIDIA wheels beside its PyTorch)
#
# No system CUDA: nvcc, the runtime headers and CCCL come from NVIDIA's PyPI wheels (CUDA 13) into .venv-cuda.
# The build has its own target dir (target/cuda). CUDA_COMPUTE_CAP picks the kernels' architecture (default 90:
# H100/H200); our own CPU kernels (AVX-512, AMX) serve only CPU tensors, so nothing of them runs on the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"

# The checks themselves, given a `zoo` binary and the golden test binary (run from the repository root).
checks() {
    local zoo=$1 golden=$2
    ours() { LD_PRELOAD="${ZOO_PRELOAD:-${LD_PRELOAD:-}}" "$@"; }
    nvidia-smi -L
    # The reduced networks of every family against timm's outputs, on the GPU (within 1e-4, folded and unfolded).
    # A failed step is reported and the rest still run (one pass on a lent machine tells everything); the exit
    # status says whether any failed.
    local failed=0
    ZOO_TEST_DEVICE=cuda:0 ours "$golden" || { echo "FAILED: the golden tests on cuda:0"; failed=1; }
    # ResNet-50 on the GPU: ours (f32, then bf16), then PyTorch eager (random weights, same shapes).
    for dtype in f32 bf16; do
        for b in 1 8 64; do
            ours "$zoo" bench resnet50 --device cuda:0 --dtype "$dtype" --batch-size "$b" --iters 20 -q ||
                { echo "FAILED: zoo bench $dtype batch $b"; failed=1; }
        done
    done
    python3 - <<'PY'
import time, statistics
try:
    import torch, torchvision
except ImportError:
    raise SystemExit("PyTorch with CUDA is not installed here: pip install torch torchvision")
m = torchvision.models.resnet50().eval().cuda()
# PyTorch's default lets cuDNN run f32 convolutions in TF32; the strict row turns that off (as Candle's f32 is).
for label, tf32, dtype in (("f32", True, torch.float32), ("f32 strict (no TF32)", False, torch.float32),
                           ("bf16", True, torch.bfloat16)):
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    mm = m.to(dtype)
    for b in (1, 8, 64):
        x = torch.randn(b, 3, 224, 224, device="cuda", dtype=dtype)
        with torch.inference_mode():
            for _ in range(5):
                mm(x)
            torch.cuda.synchronize()
            ts = []
            for _ in range(20):
                t = time.perf_counter(); mm(x); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
        ms = statistics.median(ts) * 1e3
        print(f"pytorch {torch.__version__} resnet50 {label} batch {b} on cuda:0: median {ms:.2f} ms ({ms / b:.3f} ms/img)")
PY
    [ "$failed" = 0 ] || { echo "some GPU checks failed (above)"; return 1; }
}

if [ "$mode" = "--prebuilt" ]; then
    # No toolchain here: DIR holds `zoo`, `golden` and `build-root` (the repository path the tests were built in,
    # where they look for their fixtures). The binaries were linked against empty stand-ins, so the linker
    # recorded no CUDA library: preload this machine's (the driver, and cudart, cuBLAS, cuRAND and NVRTC from a
    # system CUDA or from the NVIDIA wheels beside its PyTorch), whose symbols the loader then binds.
    dir=$(cd "${2:?usage: scripts/gpu_check.sh --prebuilt DIR}" && pwd)
    search=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib)
    while IFS= read -r d; do search+=("$d"); done < <(python3 - <<'PY' 2>/dev/null || true
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
for p in nvidia.__path__:
    for d in sorted(glob.glob(os.path.join(p, "**", "lib"), recursive=True)):
        print(d)
PY
)
    driver=$(ldconfig -p | awk '/libcuda\.so\.1 / && !found {print $NF; found = 1}')
    [ -n "$driver" ] || { echo "no NVIDIA driver (libcuda.so.1) on this machine"; exit 1; }
    preload=$driver
    for l in cudart cublas cublasLt curand nvrtc; do
        f=$( (for d in "${search[@]}"; do ls "$d/lib$l.so."* 2>/dev/null || true; done) |
            { grep -E "lib$l\.so\.[0-9]+$" || true; } | sort -V | tail -1)
        [ -n "$f" ] || { echo "lib$l.so not found (looked in: ${search[*]})"; exit 1; }
        preload="$preload:$f"
    done
    echo "preloading for our binaries: $preload"
    export ZOO_PRELOAD="$preload"
    root=$(cat "$dir/build-root")
    if [ ! -e "$root/resnet/tests/fixtures" ]; then
        mkdir -p "$(dirname "$root")" && ln -sfn "$PWD" "$root"
    fi
    checks "$dir/zoo" "$dir/golden"
    exit 0
fi

venv=.venv-cuda
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/pip" list 2>/dev/null | grep -q "nvidia-nvvm *13.0.88"; then
    # One CUDA release throughout: nvcc pulls nvvm (cicc) and crt, whose newer releases emit PTX its ptxas rejects.
    "$venv/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
fi
cuda=$(ls -d "$PWD/$venv"/lib/python3*/site-packages/nvidia/cu13 | head -1)
export PATH="$cuda/bin:$PATH" CUDA_ROOT="$cuda" CUDA_PATH="$cuda" CUDA_HOME="$cuda"
export NVCC_PREPEND_FLAGS="${NVCC_PREPEND_FLAGS:-} -I$cuda/include -I$cuda/include/cccl"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"
nvcc --version | tail -1

if [ "$mode" = "--build-only" ] || [ "$mode" = "--pack" ]; then
    # Everything compiles against the PyPI toolkit. The final links want the driver (libcuda) and the CUDA
    # libraries Candle links to (cuBLAS, cuRAND, NVRTC), which only a GPU machine has: here empty stand-ins
    # satisfy the linker and their symbols are left unresolved, for the loader to bind where the real libraries
    # are (`--prebuilt`). Only the last link step gets these flags, so the dependencies' builds are the same as a
    # GPU machine's.
    stubs="$PWD/$CARGO_TARGET_DIR/stub-libs"
    mkdir -p "$stubs"
    for l in cuda nvrtc curand cublas cublasLt cudart; do
        [ -f "$stubs/lib$l.so" ] || echo "" | cc -shared -x c - -o "$stubs/lib$l.so"
    done
    link=(-L "native=$stubs" -C link-arg=-Wl,--unresolved-symbols=ignore-all)
    cargo rustc --release --features cuda -p zoo-cli --bin zoo -- "${link[@]}"
    golden=$(cargo rustc --release --features cuda -p resnet --test golden --message-format=json-render-diagnostics \
        -- "${link[@]}" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "golden":
        print(m["executable"])')
    echo "compiled and linked (against stand-ins): $CARGO_TARGET_DIR/release/zoo and $golden, --features cuda"
    if [ "$mode" = "--pack" ]; then
        dir="${2:?usage: scripts/gpu_check.sh --pack DIR}"
        mkdir -p "$dir"
        strip -o "$dir/zoo" "$CARGO_TARGET_DIR/release/zoo"
        strip -o "$dir/golden" "$golden"
        echo "$PWD" > "$dir/build-root"
        du -sh "$dir"/*
    fi
    exit 0
fi

# The CUDA libraries Candle links to, from the same CUDA release, under the names the linker looks for; the
# driver's libcuda comes from the machine.
if ! "$venv/bin/pip" list 2>/dev/null | grep -q "nvidia-cublas *13"; then
    "$venv/bin/pip" install -q nvidia-cublas==13.0.0.19 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
fi
libs="$PWD/$CARGO_TARGET_DIR/cuda-libs"
mkdir -p "$libs"
for f in "$cuda"/lib/lib{cudart,cublas,cublasLt,curand,nvrtc}.so.*; do
    [ -e "$f" ] && ln -sf "$f" "$libs/$(basename "$f" | sed 's/\.so\..*/.so/')"
done
driver=$(ldconfig -p | awk '/libcuda\.so\.1 /{print $NF; exit}')
[ -n "$driver" ] || { echo "no NVIDIA driver (libcuda.so.1) on this machine"; exit 1; }
ln -sf "$driver" "$libs/libcuda.so"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$libs"
export LD_LIBRARY_PATH="$libs:$cuda/lib:${LD_LIBRARY_PATH:-}"
cargo build --release --features cuda -p zoo-cli
golden=$(cargo test --release --features cuda -p resnet --test golden --no-run --message-format=json-render-diagnostics \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "golden":
        print(m["executable"])')
checks "$CARGO_TARGET_DIR/release/zoo" "$golden"
