"""Bytes of one stored exemplar under each codec, and what a budget holds, on the embedded benchmark.

Why one policy stores more exemplars than another decides the study's ranking (README "Results"),
and it depends on the resolution and on how much of an image the mask keeps. For samples of the
embedded benchmark's classes, each registered codec (package defaults) encodes every sample; we
report the mean record size in bytes, its ratio to a plain exemplar (``3 H W + 2 T`` bytes) and the
exemplars per class a budget of ``--samples-per-class`` plain exemplars holds. The masks come from
the shipped weights, or from a trained run's model (``--run``: after adaptation the [CLS] attention
is sharper, so masked records are smaller).

One more line is the ``masked`` codec with ``patch_jpeg_quality=--jpeg-quality``: its kept patches
stored as one JPEG (masking composed with MRDC-style compression); ``--ratios`` adds the top-ratio
image rule at each ratio, with and without JPEG patches; ``--jpeg-qualities`` adds the ``jpeg`` codec
(MRDC) at each quality and chroma subsampling, with the count ratio to plain exemplars, from which MRDC's operating point
(the quality that stores a given multiple of raw's count) is read off bytes alone. For masked records the report also gives
the ground-truth object recall (object patches kept / object patches), so that a mask's bytes are
read beside what it keeps.

Usage::

    python benchmarks/record_bytes.py
    python benchmarks/record_bytes.py --run runs/main/masking_seed0.json   # a run kept with --keep-checkpoints
    python benchmarks/record_bytes.py --run runs/main/masking_seed0.json --ratios 0.2 0.35
    python benchmarks/record_bytes.py --per-class 8 --jpeg-qualities 10 30 50 70 90 95 97 \
        --out results/synthetic/record_bytes_jpeg_qualities.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from mask_quality import measured_model, object_recall, scored_samples  # benchmarks/, the script's folder

from avalanche_exmask.benchmarks.synthetic import benchmark_classes
from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.registry import CODECS
from avalanche_exmask.storage.budget import plain_exemplar_nbytes
from avalanche_exmask.storage.codec_options import build_codec, resolve_codec_options
from avalanche_exmask.storage.codecs import MaskedCodec


def records_object_recall(records: list, object_patches: torch.Tensor) -> float | None:
    """Mean :func:`mask_quality.object_recall` of the records' ``keep_mask`` against the ground truth
    (``object_patches`` bool ``[N, patches]``), or ``None`` for a codec that keeps whole images (its
    records' ``keep_mask`` is ``None``)."""
    if records[0].keep_mask is None:
        return None
    kept = torch.stack([torch.as_tensor(record.keep_mask).flatten().bool() for record in records])
    return float(object_recall(kept, object_patches).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=30)
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples-per-class", type=float, default=5.0, help="the budget, in plain exemplars per class")
    parser.add_argument("--jpeg-quality", type=int, default=50)
    parser.add_argument("--run", type=Path, default=None, help="a run's results JSON whose kept checkpoint gives the model")
    parser.add_argument("--ratios", type=float, nargs="*", default=[],
                        help="also the masked codec with ImageMaskRule(kind='ratio', ratio=r) for each r, with and without JPEG patches")
    parser.add_argument("--jpeg-qualities", type=int, nargs="*", default=[],
                        help="also the jpeg codec (MRDC) at each of these qualities")
    parser.add_argument("--out", default=None, help="also write the report as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(2)

    model = measured_model(args.run, pretrained="synthetic")
    samples, batch, scores = scored_samples(model, benchmark_classes()[: args.classes], args.per_class, args.seed)
    plain = plain_exemplar_nbytes(model.image_size, model.context_length)
    per_class_budget = args.samples_per_class * plain
    codecs = {
        name: build_codec(name, resolve_codec_options(name, {}), patch_size=model.patch_size) for name in CODECS.names()
    }
    codecs[f"masked, patch_jpeg_quality={args.jpeg_quality}"] = MaskedCodec(
        patch_size=model.patch_size, patch_jpeg_quality=args.jpeg_quality
    )
    for ratio in args.ratios:
        rule = ImageMaskRule(kind="ratio", ratio=ratio)
        codecs[f"masked, ratio={ratio:g}"] = MaskedCodec(patch_size=model.patch_size, image_rule=rule)
        codecs[f"masked, ratio={ratio:g}, patch_jpeg_quality={args.jpeg_quality}"] = MaskedCodec(
            patch_size=model.patch_size, image_rule=rule, patch_jpeg_quality=args.jpeg_quality
        )
    for quality in args.jpeg_qualities:
        for chroma in ("4:2:0", "4:4:4"):
            options = {"quality": quality, "chroma_subsampling": chroma}
            codecs[f"jpeg, quality={quality}, {chroma}"] = build_codec("jpeg", options, patch_size=model.patch_size)
    object_patches = torch.from_numpy(samples.object_patch_masks).flatten(1).bool()  # [N, patches]
    report = {}
    for name, codec in codecs.items():
        records = [codec.encode(batch[i], scores[i], int(samples.labels[i])) for i in range(len(samples))]
        mean_nbytes = float(np.mean([record.nbytes for record in records]))
        report[name] = {
            "mean_record_nbytes": mean_nbytes,
            "fraction_of_plain": mean_nbytes / plain,
            "exemplars_per_class": per_class_budget / mean_nbytes,
            "count_ratio_to_plain": plain / mean_nbytes,
            "object_recall": records_object_recall(records, object_patches),
        }
    print(f"plain exemplar: {plain} bytes; budget {args.samples_per_class:g} plain exemplars = {per_class_budget:.0f} bytes per class")
    for name, values in report.items():
        recall = "" if values["object_recall"] is None else f"  object recall {values['object_recall']:.3f}"
        print(f"{name:<46} {values['mean_record_nbytes']:8.0f} B  {values['fraction_of_plain']:6.3f} of plain  "
              f"{values['exemplars_per_class']:6.1f} per class ({values['count_ratio_to_plain']:5.2f}x raw's count){recall}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "report": report}, indent=1))


if __name__ == "__main__":
    main()
