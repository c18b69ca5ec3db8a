"""MRDC's quality rule on the embedded benchmark: which JPEG quality its DPP criterion picks.

For one experience's classes (generated training-like samples; no test data, no accuracy), each
JPEG quality's record size gives the count ``N_q`` a class's budget holds; the image embeddings of a
class's first ``N_q`` samples, original and JPEG-decoded, give MRDC's volume ratio
(:mod:`avalanche_exmask.storage.jpeg_quality`), averaged over the classes; the rule picks the lowest
quality within ``epsilon`` of 1. The model is the shipped pretrained one (the model at the first
experience, before adaptation) unless ``--run`` names a trained run.

Usage::

    python benchmarks/mrdc_quality_rule.py --out results/synthetic/mrdc_quality_rule.json
    # the 128 px regime (docs/regime-128.md): its model, weights and photographic backgrounds
    python benchmarks/mrdc_quality_rule.py --model exmask-tiny-128 --pretrained real --background photo \
        --out results/regime-128/mrdc_quality_rule.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from mask_quality import measured_model, scored_samples  # benchmarks/, the script's folder

from avalanche_exmask.benchmarks.synthetic import benchmark_classes
from avalanche_exmask.storage.budget import plain_exemplar_nbytes
from avalanche_exmask.storage.codecs import JpegCodec
from avalanche_exmask.storage.jpeg_quality import select_quality, volume_ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=5, help="the first experience's classes (30 in 6 experiences)")
    parser.add_argument("--per-class", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples-per-class", type=float, default=5.0, help="the budget, in plain exemplars per class")
    parser.add_argument("--qualities", type=int, nargs="*", default=[10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 100])
    parser.add_argument("--chroma-subsampling", default="4:2:0", choices=["4:2:0", "4:4:4"])
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--run", type=Path, default=None, help="a run's results JSON whose kept checkpoint gives the model")
    parser.add_argument("--model", default="exmask-tiny", help="the model (its resolution and patch grid), without --run")
    parser.add_argument("--pretrained", default="synthetic", help="its weights tag, without --run")
    parser.add_argument("--background", default="default", help="the generator's backgrounds (e.g. photo)")
    parser.add_argument("--out", default=None, help="also write the report as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(2)

    model = measured_model(args.run, pretrained=args.pretrained, model_name=args.model)
    samples, batch, scores = scored_samples(model, benchmark_classes()[: args.classes], args.per_class, args.seed, args.background)
    labels = torch.as_tensor(samples.labels)
    budget = args.samples_per_class * plain_exemplar_nbytes(model.image_size, model.context_length)
    with torch.no_grad():
        original = model.encode_image(batch.image)
    report = {}
    for quality in args.qualities:
        codec = JpegCodec(quality=quality, chroma_subsampling=args.chroma_subsampling)
        records = [codec.encode(batch[i], scores[i], int(labels[i])) for i in range(len(labels))]
        mean_nbytes = sum(r.nbytes for r in records) / len(records)
        count = min(args.per_class, int(budget // mean_nbytes))
        ratios = []
        for label in labels.unique().tolist():
            members = torch.nonzero(labels == label).flatten()[:count]
            decoded = torch.stack([codec.decode(records[i]).image for i in members.tolist()])
            with torch.no_grad():
                compressed = model.encode_image(decoded)
            ratios.append(volume_ratio(original[members], compressed))
        report[quality] = {"mean_record_nbytes": mean_nbytes, "exemplars_per_class": count, "volume_ratio": sum(ratios) / len(ratios)}
        print(f"q{quality:<3} {mean_nbytes:7.0f} B  {count:3d} per class  R = {report[quality]['volume_ratio']:.4f}")
    chosen = select_quality({q: v["volume_ratio"] for q, v in report.items()}, args.epsilon)
    print(f"MRDC's rule (|R - 1| <= {args.epsilon}) picks quality {chosen}: {report[chosen]['exemplars_per_class']} exemplars per class")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "report": report, "chosen_quality": chosen}
        Path(args.out).write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
