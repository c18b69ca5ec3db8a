"""Transfer of ``exmask-tiny`` weights to the held-out real categories of the embedded benchmark.

Runs offline on the shipped clip-art benchmark (:func:`avalanche_exmask.benchmarks.clipart.clipart`,
10 categories kept out of the ``real`` weights' pretraining; its fixed train/test split and
ground-truth object masks), the same protocol for every set of weights compared (default: the
shipped ``real`` and ``synthetic`` tags and a random initialisation):

* few-shot nearest-class-mean: ``k`` train images per class (``k`` in ``--shots``), drawn
  ``--draws`` times (the same draws for every model), the class means of the L2-normalised
  features, cosine nearest mean on all test images; features ``image``, ``text`` and
  ``image_text`` (both normalised, concatenated);
* linear probe on all train images (L-BFGS softmax on standardised frozen features, as in
  ``pretrain_tiny_clip.py``), same three feature sets;
* object-mask recall: the patches kept by the last image block's head-averaged [CLS] attention
  (the top ``--keep`` fraction, the exemplar mask's scores with ``image_attention: last``) against
  the patches holding object pixels (the clip art's alpha >= 0.5), beside a random choice of the
  same number of patches (mean over ``--draws`` draws); recall = kept object patches / object
  patches, precision = kept object patches / kept patches, per image, averaged.

Paired differences of the first model minus each other one (per draw for few-shot, per test image
for mask recall) come with 95% Student-t intervals.

A weights entry may name its model config, ``MODEL:WEIGHTS`` (``exmask-tiny-128:real``); a bare
entry is ``exmask-tiny``'s. Each model sees the benchmark at its own resolution (the 64 px files
resized as the benchmark generator resizes them; object masks nearest-neighbour) and its object
patches on its own patch grid: at 128 px with 16-pixel patches the grid is the same 8 x 8 as at
64 px with 8-pixel patches, so mask recall is paired per image across the two geometries. With
``--background photo`` every image's object is pasted over a crop of the shipped photographs
(:class:`avalanche_exmask.benchmarks.clipart.ClipartOnPhotos`, seed 0).

    python benchmarks/transfer_eval.py --out results/transfer/clipart_transfer.json
    python benchmarks/transfer_eval.py --weights exmask-tiny-128:real real none --background photo \
        --out results/transfer/clipart_transfer_128_photo.json
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clipart_material import patch_mask  # noqa: E402
from pretrain_tiny_clip import encode, linear_probe  # noqa: E402

from avalanche_exmask.benchmarks.clipart import CLIPART_ROOT, ClipartOnPhotos, clipart_object_masks  # noqa: E402
from avalanche_exmask.data.encode import SampleEncoder  # noqa: E402
from avalanche_exmask.models.factory import create_clip, get_tokenizer, register_packaged_configs  # noqa: E402
from avalanche_exmask.reporting import t_interval  # noqa: E402

MODEL_NAME = "exmask-tiny"
FEATURES = ("image", "text", "image_text")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", nargs="+", default=["real", "synthetic", "none"],
                        help="shipped tags, weights files, or 'none' (random initialisation, seed 0), each optionally"
                             " prefixed by its model config ('exmask-tiny-128:real'; default exmask-tiny); the first is"
                             " compared with the others")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--draws", type=int, default=100, help="few-shot draws and random-mask draws")
    parser.add_argument("--keep", type=float, default=0.3, help="fraction of patches kept by the mask")
    parser.add_argument("--root", type=Path, default=CLIPART_ROOT, help="the benchmark folder")
    parser.add_argument("--background", choices=("default", "photo"), default="default",
                        help="the shipped images, or their objects over crops of the shipped photographs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    if not 0 < args.keep < 1:
        parser.error(f"--keep must be in (0, 1); got {args.keep}")
    register_packaged_configs()
    for entry in args.weights:
        model_name = split_weights(entry)[0]
        try:
            SampleEncoder.for_model(model_name)
        except ValueError as error:
            parser.error(f"--weights {entry}: {error}")
    return args


def split_weights(entry: str) -> tuple[str, str]:
    """``"exmask-tiny-128:real"`` -> ``("exmask-tiny-128", "real")``; ``"real"`` -> ``("exmask-tiny", "real")``."""
    model_name, sep, weights = entry.partition(":")
    return (model_name, weights) if sep and "/" not in model_name else (MODEL_NAME, entry)


def load_split(root: Path, split: str, image_size: int = 64, background: str = "default") -> dict:
    """``images`` uint8 ``[n, 3, S, S]`` at ``S = image_size``, ``texts``, ``labels`` long ``[n]``
    (sorted class names), ``masks`` bool ``[n, S, S]`` and ``paths`` of one split of the benchmark."""
    from PIL import Image

    paths = [line for line in (root / f"{split}.txt").read_text(encoding="utf-8").split("\n") if line]
    captions = {}
    for line in (root / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        captions[entry["image"]] = entry["text"]
    classes = sorted({p.split("/", 1)[0] for p in (root / "train.txt").read_text(encoding="utf-8").split()})
    labels = [classes.index(p.split("/", 1)[0]) for p in paths]
    encoder = SampleEncoder(image_size, get_tokenizer(MODEL_NAME), 32)
    photos = ClipartOnPhotos(paths, [captions[p] for p in paths], labels, encoder=encoder, seed=0, root=root)
    if background == "photo":
        images = torch.from_numpy(np.stack([photos.image(i) for i in range(len(paths))]))
    else:
        images = torch.stack([encoder.encode_image(Image.open(root / "images" / p)) for p in paths])
    return {
        "images": images,
        "texts": [captions[p] for p in paths],
        "labels": torch.tensor(labels),
        "masks": torch.from_numpy(np.stack([photos.object_mask(i) for i in range(len(paths))])),
        "paths": paths,
        "classes": classes,
    }


def features(encoded: dict) -> dict[str, torch.Tensor]:
    """The three feature sets ``[n, E]`` / ``[n, 2E]`` from :func:`encode`'s normalised embeddings."""
    return {
        "image": encoded["image"],
        "text": encoded["text"],
        "image_text": F.normalize(torch.cat([encoded["image"], encoded["text"]], dim=1), dim=1),
    }


def few_shot_draws(labels: torch.Tensor, shots: int, draws: int, seed: int = 0) -> list[torch.Tensor]:
    """``draws`` index sets of ``shots`` train samples per class (the same for every model)."""
    generator = torch.Generator().manual_seed(seed * 1000 + shots)
    out = []
    for _ in range(draws):
        picks = []
        for cls in labels.unique():
            members = (labels == cls).nonzero().squeeze(1)
            picks.append(members[torch.randperm(len(members), generator=generator)[:shots]])
        out.append(torch.cat(picks))
    return out


def ncm_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    """Accuracy (%) of the cosine nearest class mean (class means of L2-normalised features)."""
    classes = train_y.unique()
    means = F.normalize(torch.stack([train_x[train_y == c].mean(0) for c in classes]), dim=1)
    predicted = classes[(F.normalize(test_x, dim=1) @ means.T).argmax(1)]
    return 100.0 * (predicted == test_y).float().mean().item()


def mask_scores(attention: torch.Tensor, object_patches: torch.Tensor, keep: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image recall and precision (%) of the top ``keep`` fraction of patches by ``attention``.

    :param attention: float ``[n, N]``; :param object_patches: bool ``[n, N]``.
    :return: two float ``[n]`` tensors.
    """
    k = max(1, round(keep * attention.shape[1]))
    kept = torch.zeros_like(object_patches).scatter_(1, attention.topk(k, dim=1).indices, True)
    hits = (kept & object_patches).sum(1).float()
    return 100.0 * hits / object_patches.sum(1).clamp_min(1), 100.0 * hits / k


def _summary(values: Sequence[float]) -> dict:
    values = np.asarray(values, dtype=float)
    return {"mean": round(float(values.mean()), 2), "std": round(float(values.std(ddof=1)), 2) if len(values) > 1 else 0.0}


def _paired(a: Sequence[float], b: Sequence[float]) -> dict:
    mean, low, high = t_interval([x - y for x, y in zip(a, b, strict=True)])
    return {"mean": round(mean, 2), "low": round(low, 2), "high": round(high, 2), "n": len(a)}


def evaluate(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    register_packaged_configs()
    tokenizer = get_tokenizer(MODEL_NAME)
    splits: dict[int, tuple[dict, dict]] = {}
    for entry in args.weights:
        size = SampleEncoder.for_model(split_weights(entry)[0]).image_size
        if size not in splits:
            splits[size] = (load_split(args.root, "train", size, args.background),
                            load_split(args.root, "test", size, args.background))
    train, test = splits[min(splits)]
    object_patches = torch.from_numpy(patch_mask(clipart_object_masks(test["paths"], args.root), 8))
    draws = {k: few_shot_draws(train["labels"], k, args.draws) for k in args.shots}
    generator = torch.Generator().manual_seed(0)
    random_scores = [torch.rand(object_patches.shape, generator=generator) for _ in range(args.draws)]
    random_recall = torch.stack([mask_scores(s, object_patches, args.keep)[0] for s in random_scores]).mean(0)
    random_precision = torch.stack([mask_scores(s, object_patches, args.keep)[1] for s in random_scores]).mean(0)
    per_model, raw = {}, {}
    for weights in args.weights:
        model_name, tag = split_weights(weights)
        torch.manual_seed(0)
        model = create_clip(model_name, None if tag == "none" else tag)
        train, test = splits[SampleEncoder.for_model(model_name).image_size]
        patches = torch.from_numpy(patch_mask(test["masks"].numpy(), model.visual.patch_size[0]))
        if patches.shape != object_patches.shape:
            raise SystemExit(f"--weights {weights}: a {patches.shape[1]}-patch grid; the others have {object_patches.shape[1]}")
        tr = encode(model, train["images"], tokenizer(train["texts"]))
        te = encode(model, test["images"], tokenizer(test["texts"]))
        tr_f, te_f = features(tr), features(te)
        last = len(model.visual.transformer.resblocks) - 1
        recall, precision = mask_scores(te[f"attention_{last}"], patches, args.keep)
        few_shot = {
            f"{k}_shot": {
                name: [ncm_accuracy(tr_f[name][d], train["labels"][d], te_f[name], test["labels"]) for d in draws[k]]
                for name in FEATURES
            }
            for k in args.shots
        }
        raw[weights] = {"few_shot": few_shot, "recall": recall.tolist()}
        per_model[weights] = {
            "model_name": model_name,
            "image_size": int(train["images"].shape[-1]),
            "patch_size": int(model.visual.patch_size[0]),
            "few_shot_ncm_accuracy": {k: {n: _summary(v) for n, v in by.items()} for k, by in few_shot.items()},
            "linear_probe_accuracy": {
                name: linear_probe(tr_f[name], train["labels"], te_f[name], test["labels"]) for name in FEATURES
            },
            "mask": {
                "recall": round(recall.mean().item(), 2),
                "precision": round(precision.mean().item(), 2),
            },
        }
    first = args.weights[0]
    comparisons = {}
    for other in args.weights[1:]:
        comparisons[f"{first} - {other}"] = {
            "few_shot_ncm_accuracy": {
                k: {n: _paired(raw[first]["few_shot"][k][n], raw[other]["few_shot"][k][n]) for n in FEATURES}
                for k in raw[first]["few_shot"]
            },
            "mask_recall": _paired(raw[first]["recall"], raw[other]["recall"]),
        }
    comparisons[f"{first} - random mask"] = {"mask_recall": _paired(raw[first]["recall"], random_recall.tolist())}
    return {
        "benchmark": {
            "root": str(args.root), "classes": train["classes"], "train": len(train["paths"]), "test": len(test["paths"]),
            "chance_accuracy": round(100.0 / len(train["classes"]), 2),
            "object_patch_fraction": round(100.0 * object_patches.float().mean().item(), 2),
            "background": args.background,
        },
        "protocol": {"shots": args.shots, "draws": args.draws, "keep": args.keep, "attention": "last block [CLS], head mean"},
        "models": per_model,
        "random_mask": {"recall": round(random_recall.mean().item(), 2), "precision": round(random_precision.mean().item(), 2)},
        "paired_differences": comparisons,
    }


def format_table(results: dict) -> str:
    """A Markdown table: one row per model (few-shot NCM at each k, linear probe, mask recall)."""
    models = results["models"]
    shots = list(next(iter(models.values()))["few_shot_ncm_accuracy"])
    header = ["weights"] + [f"NCM {k.replace('_shot', '')}-shot {f}" for k in shots for f in ("img", "txt", "both")]
    header += ["probe img", "probe txt", "probe both", f"mask recall @{results['protocol']['keep']:g}"]
    rows = [header, ["---"] * len(header)]
    for name, m in models.items():
        row = [name]
        for k in shots:
            row += [f"{m['few_shot_ncm_accuracy'][k][f]['mean']:.1f}" for f in FEATURES]
        row += [f"{m['linear_probe_accuracy'][f]:.1f}" for f in FEATURES]
        row.append(f"{m['mask']['recall']:.1f}")
        rows.append(row)
    random_row = ["random mask"] + [""] * (len(header) - 2) + [f"{results['random_mask']['recall']:.1f}"]
    rows.append(random_row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    results = evaluate(args)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    print(json.dumps(results["paired_differences"], indent=1))
    return results


if __name__ == "__main__":
    main()
