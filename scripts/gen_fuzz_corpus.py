"""Seed corpus of the fuzz targets (fuzz/corpus/<target>/), made from real files.

- image: the test photos (chelsea.png, china.jpg, ...) shrunk to a few dozen pixels and saved in every
  format and pixel mode `resnet::data::decode_image` reads (baseline, progressive, gray and CMYK JPEG;
  RGB, RGBA, palette, 16-bit gray PNG; GIF; BMP; TIFF; lossy and lossless WebP), by PIL.
- safetensors: tiny checkpoints written by the `safetensors` package, with zoo's metadata
  (zoo.arch, zoo.config, zoo.preprocess, zoo.labels).
- pth: `weights/tests/fixtures/*.pth` as files (first byte 0) and their `data.pkl` pickles alone (first
  byte 1), as the `pth` target reads them.
- keras: a tiny TF.js layers model (Conv2D, BatchNormalization, Dense) with its shard, in the `keras`
  target's framing (u32 length, model.json, shard).
- npy: `numpy.save` of float16/32/64 arrays (versions 1.0 and 2.0, scalars, empty), plus a Fortran-order,
  a big-endian and an integer array (refused cleanly).

Run from the workspace root, with the photos in DIR (default `.data`, see scripts/fetch_test_data.sh):
    .venv/bin/python scripts/gen_fuzz_corpus.py [DIR]
Needs pillow, numpy, safetensors (the `.venv` of scripts/README.md). Deterministic.
"""

import io
import json
import os
import struct
import sys
import zipfile

import numpy as np
from PIL import Image
from safetensors.numpy import save as st_save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")
PHOTOS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".data")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def saved(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def images():
    small = {}
    for name, size in [("chelsea.png", (24, 16)), ("china.jpg", (20, 14)), ("flower.jpg", (16, 12)),
                       ("coffee.png", (18, 12)), ("astronaut.png", (16, 16)), ("rocket.jpg", (10, 24))]:
        img = Image.open(os.path.join(PHOTOS, name)).convert("RGB")
        small[name.split(".")[0]] = img.resize(size, Image.Resampling.LANCZOS)
    cat, china, flower, coffee, astro, rocket = (small[k] for k in
                                                 ["chelsea", "china", "flower", "coffee", "astronaut", "rocket"])
    put("image", "cat_baseline.jpg", saved(cat, "JPEG", quality=75))
    put("image", "china_progressive.jpg", saved(china, "JPEG", quality=80, progressive=True))
    put("image", "flower_gray.jpg", saved(flower.convert("L"), "JPEG", quality=70))
    put("image", "coffee_cmyk.jpg", saved(coffee.convert("CMYK"), "JPEG", quality=70))
    put("image", "rocket_420.jpg", saved(rocket, "JPEG", quality=60, subsampling=2))
    put("image", "cat_rgb.png", saved(cat, "PNG"))
    rgba = astro.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(astro.size))
    put("image", "astronaut_rgba.png", saved(rgba, "PNG"))
    put("image", "flower_palette.png", saved(flower.quantize(16), "PNG"))
    gray16 = Image.fromarray(np.asarray(china.convert("L"), dtype=np.uint16) * 257)
    put("image", "china_gray16.png", saved(gray16, "PNG"))
    put("image", "rocket.gif", saved(rocket.quantize(32), "GIF"))
    put("image", "coffee.bmp", saved(coffee, "BMP"))
    put("image", "cat.tiff", saved(cat, "TIFF"))
    put("image", "astronaut_lossy.webp", saved(astro, "WEBP", quality=50))
    put("image", "flower_lossless.webp", saved(flower, "WEBP", lossless=True))


def safetensors_files():
    config = {"block": {"kind": "basic"}, "stem": {"kind": "cifar", "width": 4}, "shortcut": "zero_pad",
              "depths": [1, 1], "channels": [4, 8], "num_classes": 3}
    preprocess = {"input_size": [3, 8, 8], "crop_pct": 1.0, "crop_mode": "center", "interpolation": "bilinear",
                  "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    rng = np.random.default_rng(0)
    tensors = {
        "conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "bn1.running_var": np.ones(4, dtype=np.float32),
        "fc.weight": rng.standard_normal((3, 8)).astype(np.float16),
        "bn1.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    meta = {"zoo.arch": "resnet_tiny", "zoo.config": json.dumps(config), "zoo.preprocess": json.dumps(preprocess),
            "zoo.labels": json.dumps(["cat", "dog", "rocket"])}
    put("safetensors", "tiny_zoo.safetensors", st_save(tensors, metadata=meta))
    put("safetensors", "plain.safetensors", st_save({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}))
    put("safetensors", "label_set.safetensors",
        st_save({"b": np.zeros(2, dtype=np.float64)}, metadata={"zoo.label_set": "imagenet-1k"}))


def pth_files():
    fixtures = os.path.join(ROOT, "weights", "tests", "fixtures")
    for name in sorted(os.listdir(fixtures)):
        if not name.endswith(".pth"):
            continue
        data = open(os.path.join(fixtures, name), "rb").read()
        base = name[:-4]
        put("pth", f"{base}.file", b"\x00" + data)
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
            put("pth", f"{base}.pickle", b"\x01" + z.read(pkl))


def keras_model():
    layers = [
        {"class_name": "Conv2D", "name": "conv", "config": {"name": "conv", "filters": 2, "kernel_size": [2, 2],
                                                             "strides": [1, 1], "use_bias": True}},
        {"class_name": "BatchNormalization", "name": "bn", "config": {"name": "bn", "epsilon": 0.001}},
        {"class_name": "Dense", "name": "fc", "config": {"name": "fc", "units": 3}},
    ]
    weights = [("conv/kernel", [2, 2, 1, 2]), ("conv/bias", [2]), ("bn/gamma", [2]), ("bn/beta", [2]),
               ("bn/moving_mean", [2]), ("bn/moving_variance", [2]), ("fc/kernel", [2, 3]), ("fc/bias", [3])]
    model = {"format": "layers-model", "generatedBy": "keras v2.2.4-tf", "convertedBy": "TensorFlow.js Converter",
             "modelTopology": {"keras_version": "2.2.4-tf", "backend": "tensorflow",
                               "model_config": {"class_name": "Model", "config": {"name": "tiny", "layers": layers}}},
             "weightsManifest": [{"paths": ["group1-shard1of1.bin"],
                                  "weights": [{"name": n, "shape": s, "dtype": "float32"} for n, s in weights]}]}
    count = sum(int(np.prod(s)) for _, s in weights)
    shard = (np.arange(count, dtype=np.float32) / 8).astype("<f4").tobytes()
    js = json.dumps(model).encode()
    put("keras", "tiny_layers_model", struct.pack("<I", len(js)) + js + shard)
    # Sequential form: the layer list is the config itself.
    seq = dict(model, modelTopology={"class_name": "Sequential", "config": layers})
    js = json.dumps(seq).encode()
    put("keras", "tiny_sequential", struct.pack("<I", len(js)) + js + shard)


def npy_files():
    def npy(a, **kw):
        b = io.BytesIO()
        np.lib.format.write_array(b, a, **kw)
        return b.getvalue()
    put("npy", "f32_chw.npy", npy(np.linspace(-1, 1, 3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)))
    put("npy", "f16_nchw.npy", npy(np.ones((2, 3, 2, 2), dtype=np.float16)))
    put("npy", "f64_scalar.npy", npy(np.array(2.5)))
    put("npy", "f32_empty.npy", npy(np.zeros((0, 3), dtype=np.float32)))
    put("npy", "f32_v2.npy", npy(np.arange(8, dtype=np.float32).reshape(2, 4), version=(2, 0)))
    put("npy", "f32_fortran.npy", npy(np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))))
    put("npy", "f32_big_endian.npy", npy(np.arange(4, dtype=">f4")))
    put("npy", "i64.npy", npy(np.arange(4, dtype=np.int64)))


if __name__ == "__main__":
    images()
    safetensors_files()
    pth_files()
    keras_model()
    npy_files()
    total = sum(len(fs) for _, _, fs in os.walk(OUT))
    print(f"{total} files in {OUT}")
