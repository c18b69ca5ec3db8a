"""Bytes of one stored exemplar under each codec, and what a budget holds, on the embedded benchmark.

Why one policy stores more exemplars than another decides the study's ranking (README "Results"),
and it depends on the resolution and on how much of an image the mask keeps. For samples of the
embedded benchmark's classes, each registered codec (package defaults) encodes every sample; we
report the mean record size in bytes, its ratio to a plain exemplar (``3 H W + 2 T`` bytes) and the
exemplars per class a budget of ``--samples-per-class`` plain exemplars holds. The masks come from
the shipped weights, or from a trained run's model (``--run``: after adaptation the [CLS] attention
is sharper, so masked records are smaller).

One more line is the ``masked`` codec with ``patch_jpeg_quality=--jpeg-quality``: its kept patches
stored as one JPEG (masking composed with MRDC-style compression).

Usage::

    python benchmarks/record_bytes.py
    python benchmarks/record_bytes.py --run runs/main/masking_seed0.json   # a run kept with --keep-checkpoints
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from avalanche_exmask.benchmarks.synthetic import benchmark_classes
from avalanche_exmask.registry import CODECS
from avalanche_exmask.storage.budget import plain_exemplar_nbytes
from avalanche_exmask.storage.codec_options import build_codec, resolve_codec_options
from avalanche_exmask.storage.codecs import MaskedCodec
from mask_quality import measured_model, scored_samples  # benchmarks/, the script's folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=30)
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples-per-class", type=float, default=5.0, help="the budget, in plain exemplars per class")
    parser.add_argument("--jpeg-quality", type=int, default=50)
    parser.add_argument("--run", type=Path, default=None, help="a run's results JSON whose kept checkpoint gives the model")
    parser.add_argument("--out", default=None, help="also write the report as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(2)

    model = measured_model(args.run, pretrained="synthetic")
    samples, batch, scores = scored_samples(model, benchmark_classes()[: args.classes], args.per_class, args.seed)
    plain = plain_exemplar_nbytes(model.image_size, model.context_length)
    per_class_budget = args.samples_per_class * plain
    sizes: dict[str, list[int]] = {}
    for name in CODECS.names():
        codec = build_codec(name, resolve_codec_options(name, {}), patch_size=model.patch_size)
        sizes[name] = [codec.encode(batch[i], scores[i], int(samples.labels[i])).nbytes for i in range(len(samples))]
    jpeg_patches = MaskedCodec(patch_size=model.patch_size, patch_jpeg_quality=args.jpeg_quality)
    sizes[f"masked, patch_jpeg_quality={args.jpeg_quality}"] = [
        jpeg_patches.encode(batch[i], scores[i], int(samples.labels[i])).nbytes for i in range(len(samples))
    ]
    report = {
        name: {
            "mean_record_nbytes": float(np.mean(values)),
            "fraction_of_plain": float(np.mean(values)) / plain,
            "exemplars_per_class": per_class_budget / float(np.mean(values)),
        }
        for name, values in sizes.items()
    }
    print(f"plain exemplar: {plain} bytes; budget {args.samples_per_class:g} plain exemplars = {per_class_budget:.0f} bytes per class")
    for name, values in report.items():
        print(f"{name:<46} {values['mean_record_nbytes']:8.0f} B  {values['fraction_of_plain']:6.3f} of plain  "
              f"{values['exemplars_per_class']:6.1f} per class")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "report": report}, indent=1))


if __name__ == "__main__":
    main()
