#!/usr/bin/env bash
# The GPU path, ready for whoever is lent a GPU: one command.
#
#   scripts/gpu_check.sh --build-only   # compile `zoo` and the golden tests with `--features cuda` (no GPU needed)
#   scripts/gpu_check.sh                # then, on a machine with an NVIDIA GPU: the golden tests on cuda:0 and
#                                       # ResNet-50 at batch 1, 8 and 64 against PyTorch on the same GPU
#
# No system CUDA: nvcc, the runtime headers and CCCL come from NVIDIA's PyPI wheels (CUDA 13) into .venv-cuda.
# The build has its own target dir (target/cuda). CUDA_COMPUTE_CAP picks the kernels' architecture (default 90:
# H100/H200); our own CPU kernels (AVX-512, AMX) serve only CPU tensors, so nothing of them runs on the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
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

if [ "${1:-}" = "--build-only" ]; then
    # Everything compiles against the PyPI toolkit. The final links want the driver (libcuda) and the CUDA
    # libraries Candle links to (cuBLAS, cuRAND, NVRTC), which only a GPU machine has: here empty stand-ins
    # satisfy the linker and their symbols are left unresolved (the binaries are checked, not run). Only the
    # last link step gets these flags, so the dependencies' builds are the same as a GPU machine's.
    stubs="$PWD/$CARGO_TARGET_DIR/stub-libs"
    mkdir -p "$stubs"
    for l in cuda nvrtc curand cublas cublasLt cudart; do
        [ -f "$stubs/lib$l.so" ] || echo "" | cc -shared -x c - -o "$stubs/lib$l.so"
    done
    link=(-L "native=$stubs" -C link-arg=-Wl,--unresolved-symbols=ignore-all)
    cargo rustc --release --features cuda -p zoo-cli --bin zoo -- "${link[@]}"
    cargo rustc --release --features cuda -p resnet --test golden -- "${link[@]}"
    echo "compiled and linked (against stand-ins): $CARGO_TARGET_DIR/release/zoo and the golden tests, --features cuda"
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

nvidia-smi -L
# The reduced networks of every family against timm's outputs, on the GPU (within 1e-4, folded and unfolded).
ZOO_TEST_DEVICE=cuda:0 cargo test --release --features cuda -p resnet --test golden
# ResNet-50 on the GPU: ours, then PyTorch eager (f32, random weights, same shapes).
for b in 1 8 64; do
    "$CARGO_TARGET_DIR/release/zoo" bench resnet50 --device cuda:0 --batch-size "$b" --iters 20 -q
done
python3 - <<'PY'
import time, statistics
try:
    import torch, torchvision
except ImportError:
    raise SystemExit("PyTorch with CUDA is not installed here: pip install torch torchvision")
m = torchvision.models.resnet50().eval().cuda()
for b in (1, 8, 64):
    x = torch.randn(b, 3, 224, 224, device="cuda")
    with torch.inference_mode():
        for _ in range(5):
            m(x)
        torch.cuda.synchronize()
        ts = []
        for _ in range(20):
            t = time.perf_counter(); m(x); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
    print(f"pytorch {torch.__version__} resnet50 batch {b} on cuda:0: median {statistics.median(ts) * 1e3:.2f} ms")
PY
