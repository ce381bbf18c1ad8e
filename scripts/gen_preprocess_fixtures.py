#!/usr/bin/env python3
"""Reference data for resnet::data (image decoding and the eval transform), computed with PIL + timm/torchvision.

Run from the workspace root, after `bash scripts/fetch_test_data.sh`:
    .venv/bin/python scripts/gen_preprocess_fixtures.py
Writes resnet/tests/fixtures/preprocess/:
  - small derived images (made with PIL from the photos in .data/): every mode PIL's convert("RGB") handles
    differently (L, LA, P, RGBA, 16-bit gray and RGB PNG) and JPEGs with chroma subsampling, progressive,
    grayscale and CMYK encodings; small enough to commit.
  - expected.safetensors, all uint8 unless said:
      decode.<file>       (H, W, 3)  Image.open(file).convert("RGB") of each small image above
      decode.<photo>      (H/8, W/8, 3) every 8th row and column of the decoded .data photo, whose full
                          decoded bytes' sha256 is metadata["sha256.<photo>"]
      case.<name>         (3, H, W)  timm's eval transform with normalize=False (resize + centre crop, uint8)
      normalized.<name>   (3, H, W)  float32, the same transform with normalize=True (only the cases in NORMALIZED)
    metadata["cases"] = JSON list of {name, source, input_size, crop_pct, crop_mode, interpolation, mean, std};
    source is "data/<file>" (the photos in .data/, never committed) or "fixture/<file>".
Deterministic (a seeded numpy generator, no network): re-running rewrites identical images and tensors; only the
order of the metadata keys in the safetensors header may change.
"""
import hashlib
import json
import os
import struct
import zlib

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save_file
from timm.data.transforms_factory import transforms_imagenet_eval

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, ".data")
OUT = os.path.join(ROOT, "resnet", "tests", "fixtures", "preprocess")
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
PHOTOS = ["china.jpg", "flower.jpg", "chelsea.png"]


def case(name, source, size, crop_pct, interpolation, crop_mode="center", mean=IMAGENET["mean"],
         std=IMAGENET["std"]):
    size = list(size) if isinstance(size, tuple) else [size, size]
    return dict(name=name, source=source, input_size=[3] + size, crop_pct=crop_pct, crop_mode=crop_mode,
                interpolation=interpolation, mean=list(mean), std=list(std))


CASES = [
    # The photos (downscaling, PNG and JPEG, both filters, the standard ImageNet config).
    case("china_bilinear_160", "data/china.jpg", 160, 0.875, "bilinear"),
    case("flower_bicubic_128", "data/flower.jpg", 128, 0.95, "bicubic"),
    case("chelsea_bilinear_224", "data/chelsea.png", 224, 0.875, "bilinear"),
    case("chelsea_bicubic_112", "data/chelsea.png", 112, 0.875, "bicubic",
         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    case("chelsea_squash_bicubic_144", "data/chelsea.png", 144, 0.9, "bicubic", crop_mode="squash"),
    # Non-square input: timm's ResizeKeepRatio instead of torchvision's Resize(int).
    case("china_nonsquare_bicubic_96x128", "data/china.jpg", (96, 128), 0.875, "bicubic"),
    case("flower_nearest_96", "data/flower.jpg", 96, 0.875, "nearest"),
    # crop_pct > 1: the resized image is smaller than the crop, CenterCrop pads with zeros.
    case("china_pad_bilinear_64", "data/china.jpg", 64, 1.1, "bilinear"),
    # Upscaling a small crop of a photo.
    case("small_upscale_bicubic_128", "fixture/small.png", 128, 1.0, "bicubic"),
    case("small_upscale_bilinear_96", "fixture/small.png", 96, 0.875, "bilinear"),
    # Every conversion to RGB.
    case("gray_bilinear_64", "fixture/gray.png", 64, 0.875, "bilinear"),
    case("la_bicubic_64", "fixture/la.png", 64, 0.875, "bicubic"),
    case("palette_bicubic_64", "fixture/palette.png", 64, 0.9, "bicubic"),
    case("rgba_bilinear_64", "fixture/rgba.png", 64, 0.875, "bilinear"),
    case("gray16_bilinear_64", "fixture/gray16.png", 64, 0.875, "bilinear"),
    case("rgb16_bicubic_64", "fixture/rgb16.png", 64, 0.875, "bicubic"),
    case("jpeg420_bicubic_64", "fixture/ycc420.jpg", 64, 0.875, "bicubic"),
    case("cmyk_bilinear_64", "fixture/cmyk.jpg", 64, 0.875, "bilinear"),
]
NORMALIZED = ["chelsea_bicubic_112"]


def png_rgb16(path, rgb16):
    """PIL cannot write 16-bit RGB PNGs, so write one by hand (colour type 2, bit depth 16, filter 0)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def make_small_images():
    """Small images derived from the photos, one per conversion path; returns their file names."""
    rng = np.random.default_rng(0)
    chelsea = Image.open(os.path.join(DATA, "chelsea.png")).convert("RGB")
    china = Image.open(os.path.join(DATA, "china.jpg")).convert("RGB")
    base = chelsea.resize((90, 60), Image.BICUBIC)  # odd aspect, small
    gray = base.convert("L")
    files = {}

    files["small.png"] = china.crop((300, 180, 356, 220))  # 56x40 detail, upscaled by the cases
    files["gray.png"] = gray
    alpha = Image.fromarray(rng.integers(0, 256, (60, 90), dtype=np.uint8))
    files["la.png"] = Image.merge("LA", (gray, alpha))
    files["palette.png"] = base.quantize(64)
    files["rgba.png"] = Image.merge("RGBA", (*base.split(), alpha))
    # 16-bit gray spanning 0..~600: PIL's I;16 -> RGB clips at 255 instead of scaling, so both sides show.
    g16 = np.asarray(gray, dtype=np.uint16) * 2 + rng.integers(0, 90, (60, 90), dtype=np.uint16)
    files["gray16.png"] = Image.frombytes("I;16", (90, 60), g16.astype("<u2").tobytes())
    for name, img in files.items():
        img.save(os.path.join(OUT, name))
    # 16-bit RGB with noisy low bytes: PIL keeps the high byte (no rounding).
    rgb16 = np.asarray(base, dtype=np.uint16) * 257 + rng.integers(0, 256, (60, 90, 3), dtype=np.uint16) - 128
    png_rgb16(os.path.join(OUT, "rgb16.png"), np.clip(rgb16, 0, 65535).astype(np.uint16))

    # JPEGs: odd sizes so partial MCUs and the chroma upsampling's edges are exercised.
    patch = china.crop((200, 100, 297, 175))  # 97x75
    jpegs = {
        "ycc420.jpg": dict(img=patch, subsampling=2),
        "ycc422.jpg": dict(img=patch, subsampling=1),
        "ycc444.jpg": dict(img=patch, subsampling=0),
        "progressive.jpg": dict(img=patch, subsampling=2, progressive=True),
        "gray.jpg": dict(img=patch.convert("L")),
        "cmyk.jpg": dict(img=patch.convert("CMYK")),
        "restart.jpg": dict(img=patch, subsampling=2, restart_marker_blocks=4),
    }
    for name, kw in jpegs.items():
        img = kw.pop("img")
        img.save(os.path.join(OUT, name), quality=90, **kw)
    # The other formats, decoded by the `image` crate.
    others = {
        "palette.gif": lambda path: base.quantize(64).save(path, transparency=0),
        "rgb.bmp": lambda path: base.save(path),
        "rgb.tiff": lambda path: base.save(path, compression="tiff_lzw"),
        "cmyk.tiff": lambda path: base.convert("CMYK").save(path),
        "lossless.webp": lambda path: base.save(path, lossless=True),
        "lossy.webp": lambda path: base.save(path, quality=80),
    }
    for name, save in others.items():
        save(os.path.join(OUT, name))
    return sorted(list(files) + ["rgb16.png"] + list(jpegs) + list(others))


def load_rgb(path):
    # What timm's and torchvision's folder loaders do.
    with Image.open(path) as img:
        return img.convert("RGB")


def source_path(source):
    kind, name = source.split("/", 1)
    return os.path.join(DATA if kind == "data" else OUT, name)


def transform(c, normalize):
    return transforms_imagenet_eval(
        img_size=tuple(c["input_size"][1:]) if c["input_size"][1] != c["input_size"][2] else c["input_size"][1],
        crop_pct=c["crop_pct"], crop_mode=c["crop_mode"], interpolation=c["interpolation"],
        mean=tuple(c["mean"]), std=tuple(c["std"]), normalize=normalize)


def main():
    os.makedirs(OUT, exist_ok=True)
    tensors, meta = {}, {}
    for name in make_small_images():
        tensors[f"decode.{name}"] = np.asarray(load_rgb(os.path.join(OUT, name)))
    for name in PHOTOS:
        rgb = np.ascontiguousarray(np.asarray(load_rgb(os.path.join(DATA, name))))
        meta[f"sha256.{name}"] = hashlib.sha256(rgb.tobytes()).hexdigest()
        if name.endswith(".jpg"):
            tensors[f"decode.{name}"] = np.ascontiguousarray(rgb[::8, ::8])
    for c in CASES:
        img = load_rgb(source_path(c["source"]))
        out = transform(c, normalize=False)(img)
        assert out.dtype == torch.uint8 and list(out.shape) == c["input_size"], (c["name"], out.shape)
        tensors[f"case.{c['name']}"] = out.numpy()
        if c["name"] in NORMALIZED:
            tensors[f"normalized.{c['name']}"] = transform(c, normalize=True)(img).numpy().astype(np.float32)
    meta["cases"] = json.dumps(CASES)
    meta["versions"] = json.dumps({"pillow": Image.__version__, "torch": torch.__version__,
                                   "timm": __import__("timm").__version__,
                                   "torchvision": __import__("torchvision").__version__})
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(OUT, "expected.safetensors"),
              metadata=meta)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(tensors)} tensors and {len(os.listdir(OUT))} files ({total / 1024:.0f} KiB) to {OUT}")


if __name__ == "__main__":
    main()
