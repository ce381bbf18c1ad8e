#!/usr/bin/env python3
"""Peer numbers for benches/README.md: PyTorch eager and ONNX Runtime on the shapes `compare` uses.

ResNet-18/50 (torchvision, random weights, eval mode), batch 1 and 8, 224x224, 2 threads, median of 10
timed runs after 3 warm-up runs, reported in ms/img.

    python3 scripts/bench_peers.py --setup --ours target/release/zoo   # first time: creates .venv with
                                                             # torch, torchvision, onnxruntime (from PyPI)
    .venv/bin/python scripts/bench_peers.py                  # PyTorch eager (+ ONNX Runtime if installed)
    .venv/bin/python scripts/bench_peers.py --install-ort    # pip-installs onnxruntime into this venv first
    .venv/bin/python scripts/bench_peers.py --ours target/release/zoo   # + ours (`zoo bench`), interleaved
    .venv/bin/python scripts/bench_peers.py --ours target/release/zoo --engines avx512,portable --rounds 3
                                                             # each of our conv engines, three rounds
    .venv/bin/python scripts/bench_peers.py --ours target/release/zoo --engines auto,auto:bf16 --torch-bf16 --rounds 3
                                                             # + PyTorch with CPU autocast to bf16, our bf16
    .venv/bin/python scripts/bench_peers.py --ours target/release/zoo --engines auto,auto:int8 --int8-calib DIR
                                                             # + ONNX Runtime int8 (quantize_static) and our int8,
                                                             # both calibrated on DIR's images
    .venv/bin/python scripts/bench_peers.py --ours target/release/zoo --engines auto,auto:int8-amx,auto:int8-vnni \
        --int8-calib DIR --rounds 3                          # each of our int8 kernels

    cargo build --release --manifest-path benches/rust-peers/Cargo.toml --target-dir target/rust-peers
    .venv/bin/python scripts/bench_peers.py --ours target/release/zoo --rust-peers target/rust-peers/release/rust-peers-bench \
        --rounds 3                                           # + the pure-Rust runtimes rten and tract, same ONNX file
    (cd benches/stock-candle && CARGO_TARGET_DIR=$PWD/../../target/stock-candle cargo build --release)
    .venv/bin/python scripts/bench_peers.py --ours target/release/zoo --stock-candle target/stock-candle/release/stock-candle-bench \
        --rounds 3                                           # + stock candle-transformers (random weights, same shapes)

With --ours, each (model, batch) row times PyTorch and the other peers first, then ONNX Runtime and
`zoo bench` back to back, ONNX Runtime first in odd rounds and second in even ones, so that the headline
ratio compares two neighbours in time (timings here drift by up to 2x over minutes) and the order's own
effect cancels over the rounds.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def median_ms(fn, warmup=3, iters=10):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def ours_ms(zoo, name, batch, iters, engine="auto", dtype="f32", threads=2, calib=None):
    """ms/img of our network from `zoo bench --json` (3 warm-ups, median of `iters`, same threads); dtype int8
    quantizes with `--int8-calib calib`, `int8-KERNEL` (int8-amx, int8-vnni, int8-f32) also sets ZOO_INT8_KERNEL."""
    precision = ["--int8-calib", calib] if dtype.startswith("int8") else ["--dtype", dtype]
    env = dict(os.environ)
    if dtype.startswith("int8-"):
        env["ZOO_INT8_KERNEL"] = dtype[len("int8-"):]
    out = subprocess.run([zoo, "bench", name, "--batch", str(batch), "--iters", str(iters), "--warmup", "3", "--json",
                          "--threads", str(threads), "--engine", engine, *precision],
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out)["median_ms"] / batch


def stock_candle_ms(binary, name, batch, iters, threads):
    """ms/img of stock candle-transformers' `name` (benches/stock-candle: 3 warm-ups, median of `iters`), its
    threads set as Candle reads them (RAYON_NUM_THREADS)."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([binary, "--archs", name, "--batches", str(batch), "--iters", str(iters), "--warmup", "3"],
                         check=True, capture_output=True, text=True, env=env).stdout
    model, b, ms = out.split()
    assert (model, int(b)) == (name, batch), out
    return float(ms)


def rust_peer_ms(binary, runtime, onnx_path, batch, iters, threads):
    """ms/img of rten or tract on the exported ONNX file (benches/rust-peers: 3 warm-ups, median of `iters`)."""
    out = subprocess.run([binary, runtime, onnx_path, str(batch), "--iters", str(iters), "--warmup", "3",
                          "--threads", str(threads)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["median_ms"] / batch


VENV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".venv")
PEERS = ["torch", "torchvision", "onnxruntime", "onnx", "onnxscript"]


def setup_and_reexec():
    """Creates the repository's .venv with the peers (if needed) and runs this script again inside it."""
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    have = subprocess.run([python, "-c", "import torch, torchvision, onnxruntime"], capture_output=True).returncode == 0
    if not have:
        print(f"installing {' '.join(PEERS)} into {os.path.normpath(VENV)} (several GB) ...", file=sys.stderr)
        subprocess.run([python, "-m", "pip", "install", "-q", *PEERS], check=True)
    argv = [a for a in sys.argv[1:] if a != "--setup"]
    os.execv(python, [python, os.path.abspath(__file__), *argv])


def ort_int8_session(ort, fp32_path, int8_path, calib_dir, batch, so):
    """ONNX Runtime's static int8 model (QDQ, per-channel int8 weights, uint8 activations) of `fp32_path`,
    calibrated on the images of `calib_dir` with torchvision's eval preprocessing."""
    import numpy as np
    from PIL import Image
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)
    exts = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
    files = sorted(f for f in os.listdir(calib_dir) if f.lower().endswith(exts))[:64]

    def load(f):
        im = Image.open(os.path.join(calib_dir, f)).convert("RGB")
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
        w, h = im.size
        l, t = (w - 224) // 2, (h - 224) // 2
        a = np.asarray(im.crop((l, t, l + 224, t + 224)), dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (a - mean) / std

    images = [load(f) for f in files]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([np.stack([images[(i + j) % len(images)] for j in range(batch)])
                                 for i in range(0, len(images), batch)])

        def get_next(self):
            b = next(self.batches, None)
            return None if b is None else {"x": b}

    quantize_static(fp32_path, int8_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return ort.InferenceSession(int8_path, so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--setup", action="store_true", help="create .venv with the peers from PyPI if needed, and run in it")
    ap.add_argument("--install-ort", action="store_true", help="pip install onnxruntime into the running venv")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--ours", metavar="ZOO", help="path of a release `zoo` binary to time alongside")
    ap.add_argument("--engines", default="auto",
                    help="comma-separated `zoo bench --engine` values to time (auto, avx512, avx2, portable), each "
                         "optionally with `:DTYPE` (`auto:bf16`: `--dtype bf16`; `auto:int8`, or `auto:int8-vnni` for one int8 "
                         "kernel)")
    ap.add_argument("--int8-calib", metavar="DIR",
                    help="also time ONNX Runtime int8 (quantize_static, QDQ, per-channel weights, calibrated on the "
                         "images of DIR); `:int8` engines use the same folder")
    ap.add_argument("--rust-peers", metavar="BIN",
                    help="also time rten and tract on the same ONNX file with BIN, the release build of "
                         "benches/rust-peers (cargo build --release --manifest-path benches/rust-peers/Cargo.toml "
                         "--target-dir target/rust-peers)")
    ap.add_argument("--stock-candle", metavar="BIN",
                    help="also time stock candle-transformers (crates.io Candle, none of our features) with BIN, the "
                         "release build of benches/stock-candle (its own workspace: cd benches/stock-candle && "
                         "CARGO_TARGET_DIR=$PWD/../../target/stock-candle cargo build --release)")
    ap.add_argument("--torch-bf16", action="store_true",
                    help="also time PyTorch under torch.autocast('cpu', dtype=torch.bfloat16)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds over every row; ratios are per round")
    ap.add_argument("--models", default="resnet18,resnet50")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--json", metavar="FILE", help="also write every measurement to FILE")
    args = ap.parse_args()
    if args.setup:
        setup_and_reexec()
    if args.install_ort:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "onnxruntime", "onnx"], check=False)

    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
        print("onnxruntime not installed (use --install-ort); skipping it", file=sys.stderr)

    print(f"torch {torch.__version__}, threads {args.threads}" + (f", onnxruntime {ort.__version__}" if ort else ""))
    engines = [e for e in args.engines.split(",") if e] if args.ours else []
    rows = []
    for name in args.models.split(","):
        model = getattr(torchvision.models, name)(weights=None).eval()
        for batch in [int(b) for b in args.batches.split(",")]:
            x = torch.randn(batch, 3, 224, 224)
            sess = None
            tmp = tempfile.TemporaryDirectory()
            if ort is not None:
                path = os.path.join(tmp.name, f"{name}.onnx")
                torch.onnx.export(model, x, path, input_names=["x"], output_names=["y"], dynamo=False)
                so = ort.SessionOptions()
                so.intra_op_num_threads = args.threads
                so.inter_op_num_threads = 1
                sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            sess8 = None
            if ort is not None and args.int8_calib:
                sess8 = ort_int8_session(ort, path, os.path.join(tmp.name, f"{name}.int8.onnx"), args.int8_calib,
                                         batch, so)
            rows.append((name, batch, model, x, (sess, sess8), tmp, path if ort is not None else None))
    header = f"{'round':>5} {'model':<9} {'batch':>5} {'torch ms/img':>13} {'ort ms/img':>11}"
    if args.torch_bf16:
        header += f" {'torch bf16':>11}"
    if args.int8_calib:
        header += f" {'ort int8':>9}"
    if args.rust_peers:
        header += f" {'rten':>7} {'tract':>7}"
    if args.stock_candle:
        header += f" {'candle-t':>8}"
    for e in engines:
        header += f" {'zoo ' + e:>15} {'ort/zoo':>8} {'torch/zoo':>9}"
        if args.torch_bf16:
            header += f" {'t-bf16/zoo':>10}"
    print(header)
    results = []
    for rnd in range(1, args.rounds + 1):
        for name, batch, model, x, (sess, sess8), _, onnx_path in rows:
            with torch.inference_mode():
                t_torch = median_ms(lambda: model(x), iters=args.iters) / batch
            line = f"{rnd:>5} {name:<9} {batch:>5} {t_torch:>13.1f} {{t_ort:>11.1f}}"
            t_bf16 = float("nan")
            if args.torch_bf16:
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    t_bf16 = median_ms(lambda: model(x), iters=args.iters) / batch
                line += f" {t_bf16:>11.1f}"
            t_ort8 = float("nan")
            if sess8 is not None:
                xn = x.numpy()
                t_ort8 = median_ms(lambda: sess8.run(None, {"x": xn}), iters=args.iters) / batch
                line += f" {t_ort8:>9.1f}"
            t_rust = {}
            if args.rust_peers and onnx_path is not None:
                for runtime in ["rten", "tract"]:
                    t_rust[runtime] = rust_peer_ms(args.rust_peers, runtime, onnx_path, batch, args.iters, args.threads)
                    line += f" {t_rust[runtime]:>7.1f}"
            if args.stock_candle:
                t_rust["candle-t"] = stock_candle_ms(args.stock_candle, name, batch, args.iters, args.threads)
                line += f" {t_rust['candle-t']:>8.1f}"
            # ONNX Runtime and ours last and back to back, in turn first (odd rounds: ONNX Runtime first): this host's
            # speed drifts by up to 1.5x over tens of seconds, and in one run the engine timed first in a round
            # was 2-5 % faster, so the headline ratio compares neighbours with the order's effect cancelled.
            t_ort, ours = float("nan"), {}

            def time_ort():
                if sess is None:
                    return float("nan")
                xn = x.numpy()
                return median_ms(lambda: sess.run(None, {"x": xn}), iters=args.iters) / batch

            if rnd % 2 == 1:
                t_ort = time_ort()
            for e in engines:
                engine, _, dtype = e.partition(":")
                ours[e] = ours_ms(args.ours, name, batch, args.iters, engine, dtype or "f32", args.threads,
                                  args.int8_calib)
            if rnd % 2 == 0:
                t_ort = time_ort()
            line = line.format(t_ort=t_ort)
            for e in engines:
                t = ours[e]
                line += f" {t:>15.1f} {t_ort / t:>7.2f}x {t_torch / t:>8.2f}x"
                if args.torch_bf16:
                    line += f" {t_bf16 / t:>9.2f}x"
                if sess8 is not None:
                    line += f" ort8/zoo {t_ort8 / t:.2f}x"
                for runtime, tr in t_rust.items():
                    line += f" {runtime}/zoo {tr / t:.2f}x"
            print(line, flush=True)
            results.append({"round": rnd, "model": name, "batch": batch, "torch_ms_per_img": t_torch,
                            "torch_bf16_ms_per_img": t_bf16, "ort_ms_per_img": t_ort, "ort_int8_ms_per_img": t_ort8, "zoo_ms_per_img": ours,
                            **{f"{r.replace('-t', '_transformers')}_ms_per_img": v for r, v in t_rust.items()}})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)

if __name__ == "__main__":
    main()
