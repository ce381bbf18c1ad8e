#!/usr/bin/env python3
"""Write weights/data/imagenet-1k.txt: the 1000 ImageNet-1k class names in standard (timm/torchvision) order,
one per line, taken verbatim from timm's bundled data files:
  timm/data/_info/imagenet_synsets.txt        (synset ids in class-index order)
  timm/data/_info/imagenet_synset_to_lemma.txt (synset<TAB>lemma)
Run from the workspace root:  .venv/bin/python scripts/gen_labels.py   (no network)
"""
import os

import timm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INFO = os.path.join(os.path.dirname(timm.__file__), "data", "_info")
OUT = os.path.join(ROOT, "weights", "data", "imagenet-1k.txt")


def main():
    with open(os.path.join(INFO, "imagenet_synsets.txt")) as f:
        synsets = [l.strip() for l in f if l.strip()]
    lemmas = {}
    with open(os.path.join(INFO, "imagenet_synset_to_lemma.txt")) as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line:
                continue
            syn, lemma = line.split("\t", 1)
            lemmas[syn] = lemma.strip()
    labels = [lemmas[s] for s in synsets]
    assert len(labels) == 1000, len(labels)
    assert labels[0] == "tench, Tinca tinca", labels[0]
    assert labels[281] == "tabby, tabby cat", labels[281]
    assert labels[285] == "Egyptian cat", labels[285]
    assert all("\n" not in l and l for l in labels)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("\n".join(labels) + "\n")
    print(f"wrote {len(labels)} labels to {OUT}")


if __name__ == "__main__":
    main()
