#!/usr/bin/env python3
"""Write weights/data/registry.json: pretrained ResNet-family weights known to timm (+ microsoft/resnet-*).

Run from the workspace root:  .venv/bin/python scripts/gen_registry.py   (no network; reads timm's pretrained cfgs)
Each entry: name, arch, tag, default (tag is timm's default tag for the arch, i.e. what
timm.create_model(arch, pretrained=True) loads), hf_hub_id, num_classes, input_size, test_input_size,
crop_pct, test_crop_pct, crop_mode, interpolation, mean, std, label_set.
Entries are sorted by (arch order below, default first, then timm's alphabetical tag order).
"""
import json
import os

import timm
from timm.models import get_pretrained_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "weights", "data", "registry.json")

ARCHS = ("resnet18 resnet34 resnet50 resnet101 resnet152 resnext50_32x4d resnext101_32x4d resnext101_32x8d "
         "resnext101_32x16d resnext101_64x4d wide_resnet50_2 wide_resnet101_2 resnet18d resnet34d resnet26 "
         "resnet26d resnet50d resnet101d resnet152d resnet10t resnet14t resnet26t resnet50t").split()

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

LABEL_SETS = {1000: "imagenet-1k", 11821: "imagenet-12k", 21841: "imagenet-22k", 21843: "imagenet-21k-goog",
              11221: "imagenet-21k-miil"}


def label_set(num_classes):
    if not num_classes:
        return None
    return LABEL_SETS.get(num_classes)


def opt_list(v):
    return list(v) if v is not None else None


def main():
    names = sorted(set(timm.list_pretrained("*resnet*")) | set(timm.list_pretrained("*resnext*")))
    entries = []
    for arch in ARCHS:
        dcfg = get_pretrained_cfg(arch)  # timm's default cfg for the arch
        default_tag = dcfg.tag if dcfg is not None else None
        archs_entries = []
        for name in names:
            a, _, tag = name.partition(".")
            if a != arch:
                continue
            c = get_pretrained_cfg(name)
            if not c.hf_hub_id:
                continue
            archs_entries.append({
                "name": name,
                "arch": arch,
                "tag": tag,
                "default": tag == default_tag,
                "hf_hub_id": c.hf_hub_id,
                "num_classes": c.num_classes,
                "input_size": list(c.input_size),
                "test_input_size": opt_list(c.test_input_size),
                "crop_pct": c.crop_pct,
                "test_crop_pct": c.test_crop_pct,
                "crop_mode": c.crop_mode,
                "interpolation": c.interpolation,
                "mean": list(c.mean),
                "std": list(c.std),
                "label_set": label_set(c.num_classes),
            })
        archs_entries.sort(key=lambda e: not e["default"])  # stable: default first
        entries.extend(archs_entries)
    n_timm = len(entries)

    for depth, arch in [(18, "resnet18"), (26, "resnet26"), (34, "resnet34"), (50, "resnet50"),
                        (101, "resnet101"), (152, "resnet152")]:
        name = f"microsoft/resnet-{depth}"
        entries.append({
            "name": name, "arch": arch, "tag": None, "default": False, "hf_hub_id": name,
            "num_classes": 1000, "input_size": [3, 224, 224], "test_input_size": None,
            "crop_pct": 0.875, "test_crop_pct": None, "crop_mode": "center", "interpolation": "bicubic",
            "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "label_set": "imagenet-1k",
        })

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(entries, f, indent=1)
        f.write("\n")
    print(f"wrote {len(entries)} entries ({n_timm} timm + {len(entries) - n_timm} microsoft) to {OUT}")
    print(f"defaults: {sum(e['default'] for e in entries)}; "
          f"non-1k: {[(e['name'], e['num_classes']) for e in entries if e['label_set'] != 'imagenet-1k']}")


if __name__ == "__main__":
    main()
