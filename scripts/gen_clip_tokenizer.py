#!/usr/bin/env python3
"""Write the text data of the `zoo-clip` crate (clip/data/) from OpenCLIP's own files.

Run from the workspace root:  .venv/bin/python scripts/gen_clip_tokenizer.py
Deterministic; no network. Needs `open_clip_torch` (its wheel ships the BPE vocabulary,
`open_clip/bpe_simple_vocab_16e6.txt.gz`); see scripts/README.md for the pinned versions.

Writes:
  clip/data/tokenizer.json        CLIP's byte-level BPE for the `tokenizers` crate: the vocabulary and merges
                                  of OpenCLIP's `SimpleTokenizer` (49408 ids: 256 byte symbols, the same with
                                  `</w>`, 48894 merges, `<start_of_text>` = 49406, `<end_of_text>` = 49407),
                                  a `\\p{L}+ | \\p{N} | punctuation-run` split, start/end tokens, truncation to 77.
  clip/data/html_entities.txt     the HTML5 named character references and the numeric-reference fix-up tables
                                  of Python's `html.unescape` (the text cleaning needs them).
  clip/data/templates_openai_imagenet.txt   OpenCLIP's 80 ImageNet prompt templates ("{}" = the label)
  clip/data/templates_simple_imagenet.txt   OpenCLIP's 7-template subset
"""
import gzip
import html
import html.entities
import json
import os
import sys

import open_clip
from open_clip import tokenizer as oc_tok
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "clip", "data")

SOT, EOT = "<start_of_text>", "<end_of_text>"
# SimpleTokenizer's split: special tokens, English contractions, letter runs, single digits, runs of anything
# else that is not whitespace. (?i) mirrors its re.IGNORECASE (simple case folding: "'S" and "'ſ" match "'s").
SPLIT = r"""(?i)'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def vocab_and_merges(bpe_path):
    """The vocabulary exactly as SimpleTokenizer.__init__ builds it, and the merges in rank order."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    symbols = list(oc_tok.bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
    assert len(vocab) == len(set(vocab)) == 49408, len(vocab)
    ref = oc_tok.SimpleTokenizer(bpe_path)
    assert ref.encoder == {v: i for i, v in enumerate(vocab)}
    assert all(len(m) == 2 for m in merges)
    return vocab, merges


def tokenizer_json(vocab, merges):
    special = lambda tok, i: {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True}
    sot, eot = len(vocab) - 2, len(vocab) - 1
    return {
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 77, "strategy": "LongestFirst", "stride": 0},
        "padding": None,
        "added_tokens": [special(SOT, sot), special(EOT, eot)],
        # The full cleaning (ftfy fixes, HTML unescape, Python's whitespace and lower-casing) is zoo-clip's
        # `clean_text`; these two keep the file usable on its own for plain text and are no-ops after it.
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"},
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": SPLIT}, "behavior": "Removed", "invert": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        ]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": SOT, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": EOT, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": SOT, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": EOT, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": EOT, "type_id": 1}}],
            "special_tokens": {SOT: {"id": SOT, "ids": [sot], "tokens": [SOT]},
                               EOT: {"id": EOT, "ids": [eot], "tokens": [EOT]}},
        },
        # Byte symbols back to bytes, "</w>" (end of word) to a space, and no space after the last word.
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            {"type": "Replace", "pattern": {"String": "</w>"}, "content": " "},
            {"type": "Strip", "content": " ", "start": 0, "stop": 1},
        ]},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": "</w>", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(vocab)},
            "merges": [f"{a} {b}" for a, b in merges],
        },
    }


def entities_text():
    hexs = lambda s: " ".join(f"{ord(c):x}" for c in s)
    lines = [f"# Generated by scripts/gen_clip_tokenizer.py from Python {sys.version.split()[0]}'s html module.",
             "# entity NAME CODEPOINTS: html.entities.html5 (NAME with or without its ';')",
             "# charref N CODEPOINTS: html._invalid_charrefs (numeric references the HTML standard replaces)",
             "# invalid N: html._invalid_codepoints (numeric references that decode to nothing)"]
    lines += [f"entity\t{name}\t{hexs(chars)}" for name, chars in sorted(html.entities.html5.items())]
    lines += [f"charref\t{n:x}\t{hexs(c)}" for n, c in sorted(html._invalid_charrefs.items())]
    lines += [f"invalid\t{n:x}" for n in sorted(html._invalid_codepoints)]
    return "\n".join(lines) + "\n"


def templates_text(templates):
    out = [t("{}") for t in templates]
    assert all(t.count("{}") == 1 and "\n" not in t for t in out)
    return "\n".join(out) + "\n"


def main():
    os.makedirs(DATA, exist_ok=True)
    vocab, merges = vocab_and_merges(sys.argv[1] if len(sys.argv) > 1 else oc_tok.default_bpe())
    with open(os.path.join(DATA, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(vocab, merges), f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    with open(os.path.join(DATA, "html_entities.txt"), "w", encoding="utf-8") as f:
        f.write(entities_text())
    with open(os.path.join(DATA, "templates_openai_imagenet.txt"), "w", encoding="utf-8") as f:
        f.write(templates_text(OPENAI_IMAGENET_TEMPLATES))
    with open(os.path.join(DATA, "templates_simple_imagenet.txt"), "w", encoding="utf-8") as f:
        f.write(templates_text(SIMPLE_IMAGENET_TEMPLATES))
    print(f"open_clip {open_clip.__version__}: {len(vocab)} tokens, {len(merges)} merges -> {DATA}")


if __name__ == "__main__":
    main()
