"""The bytes table of a regime: bytes per record of every storage policy, and what 5 raw samples a class buy.

For each *source* of images, every image is encoded by each codec of the package as a buffer would
store it (the record's ``nbytes``, token ids included), and the table gives the mean bytes per
record, its fraction of a plain exemplar (``3 S^2 + 2 T`` bytes), and the exemplars per class a
budget of ``--samples-per-class`` plain exemplars holds. Rows: raw; JPEG (MRDC) at qualities 10, 30,
50, 70, 90 (4:2:0) and at ``--extra-jpeg`` (4:2:0 and 4:4:4: where MRDC's operating point of 1.85x
raw's count lies); masked with the paper's threshold rule (mean score, discarded patches stored as
nothing) and with the top 35% of patches; the composed codec (the top 35%, or the threshold rule's
patches, stored as one JPEG at ``--composed-qualities``); CIM as its paper describes it (box at full
resolution, the rest 2x downsampled, each pixel once; the saliency is the [CLS] attention, as no
trained head is at hand for a class activation map). Masked rows of a benchmark source also give
the object recall of their masks (object patches kept / object patches).

Sources (``--sources``):

* ``synthetic-photo-128``, ``synthetic-photo-224``: the synthetic benchmark at 128 px or 224 px
  (16-pixel patches) over the shipped photographs, ``--classes`` classes, ``--per-class`` images each;
* ``clipart-photo-128``: the clip-art benchmark's test images at 128 px over the shipped photographs;
* ``photos-128``, ``photos-224``: the shipped photographs themselves
  (:mod:`avalanche_exmask.benchmarks.backgrounds`), ``--crops`` random crops of each (85-100% of
  its shorter side) at 128 px (16-pixel patches) and 224 px (ViT-B/16's geometry, 14 x 14 patches).

The masks come from ``exmask-tiny-128`` with ``--weights`` (a tag or file; ``none``: random weights,
seed 0): its [CLS] attention on the image at 128 px, bilinearly resized to the 14 x 14 grid for
224 px images. Writes ``<out>/regime_bytes.json`` (arguments, per source and codec the mean bytes,
fraction of plain, exemplars per class and object recall) and ``<out>/regime_bytes.md``::

    python benchmarks/regime_bytes.py --out results/regime-128
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avalanche_exmask.benchmarks.backgrounds import PHOTO_SOURCES, photo_backgrounds
from avalanche_exmask.benchmarks.clipart import CLIPART_ROOT, ClipartOnPhotos
from avalanche_exmask.benchmarks.synthetic import benchmark_classes, generate_synthetic
from avalanche_exmask.data.encode import SampleEncoder
from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.models.outputs import MaskingScores
from avalanche_exmask.storage.budget import plain_exemplar_nbytes
from avalanche_exmask.storage.codecs import CimCodec, JpegCodec, MaskedCodec, RawCodec

MODEL_NAME = "exmask-tiny-128"
SOURCES = ("synthetic-photo-128", "clipart-photo-128", "photos-128", "synthetic-photo-224", "photos-224")
JPEG_QUALITIES = (10, 30, 50, 70, 90)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--classes", type=int, default=20, help="synthetic classes")
    parser.add_argument("--per-class", type=int, default=5, help="synthetic images a class")
    parser.add_argument("--crops", type=int, default=8, help="random crops of each shipped photograph")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default="real", help="exmask-tiny-128's weights: a shipped tag, a file, or 'none'")
    parser.add_argument("--samples-per-class", type=float, default=5.0, help="the budget, in plain exemplars a class")
    parser.add_argument("--composed-qualities", type=int, nargs="+", default=[50, 90])
    parser.add_argument("--extra-jpeg", type=int, nargs="*", default=[95, 97],
                        help="more JPEG qualities, each at 4:2:0 and 4:4:4 chroma (where MRDC's 1.85x count ratio lies)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="folder for regime_bytes.json and .md")
    args = parser.parse_args(argv)
    for quality in [*args.composed_qualities, *args.extra_jpeg]:
        if not 1 <= quality <= 100:
            parser.error(f"--composed-qualities: {quality} is not in [1, 95]")
    if args.crops < 1 or args.per_class < 1 or args.classes < 1:
        parser.error("--crops, --per-class and --classes must be >= 1")
    return args


def codecs(patch_size: int, composed_qualities: Sequence[int], extra_jpeg: Sequence[int] = ()) -> dict[str, object]:
    """The table's rows: codec name -> codec at ``patch_size`` pixels a patch."""
    threshold = ImageMaskRule(kind="threshold", tau=1.0)
    top = ImageMaskRule(kind="ratio", ratio=0.35)
    rows: dict[str, object] = {"raw": RawCodec()}
    rows.update({f"jpeg q{q}": JpegCodec(quality=q) for q in JPEG_QUALITIES})
    for quality in extra_jpeg:
        rows[f"jpeg q{quality}"] = JpegCodec(quality=quality)
        rows[f"jpeg q{quality} 4:4:4"] = JpegCodec(quality=quality, chroma_subsampling="4:4:4")
    rows["masked, threshold"] = MaskedCodec(image_rule=threshold, patch_size=patch_size, background_downsample=None)
    rows["masked, top 35%"] = MaskedCodec(image_rule=top, patch_size=patch_size, background_downsample=None)
    for quality in composed_qualities:
        rows[f"composed, top 35%, q{quality}"] = MaskedCodec(
            image_rule=top, patch_size=patch_size, background_downsample=None, patch_jpeg_quality=quality
        )
        rows[f"composed, threshold, q{quality}"] = MaskedCodec(
            image_rule=threshold, patch_size=patch_size, background_downsample=None, patch_jpeg_quality=quality
        )
    rows["cim"] = CimCodec(threshold=0.6, downsample=2, pixels_once=True, saliency="attention", patch_size=patch_size)
    return rows


def scores_on_grid(scores: MaskingScores, grid: int) -> MaskingScores:
    """``scores`` with the patch attention (and patch features) resized, bilinearly, to a ``grid x
    grid`` patch grid (the attention renormalised to its former sum); other fields kept."""
    batch, patches = scores.patch_attention.shape
    side = int(round(patches ** 0.5))
    if side == grid:
        return scores
    attention = scores.patch_attention.reshape(batch, 1, side, side)
    resized = F.interpolate(attention, size=(grid, grid), mode="bilinear", align_corners=False).flatten(1)
    resized = resized * (scores.patch_attention.sum(1, keepdim=True) / resized.sum(1, keepdim=True))
    features = scores.patch_features.transpose(1, 2).reshape(batch, -1, side, side)
    features = F.interpolate(features, size=(grid, grid), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    return MaskingScores(
        embedding=scores.embedding, patch_attention=resized, token_attention=scores.token_attention,
        patch_features=F.normalize(features, dim=-1), token_features=scores.token_features, batch_size=[batch],
    )


def load_source(name: str, args: argparse.Namespace) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """``uint8 [n, 3, S, S]`` images, ``n`` captions and (benchmarks) ``bool [n, S, S]`` object masks."""
    size = int(name.rsplit("-", 1)[1])
    if name.startswith("synthetic-photo-"):
        samples = generate_synthetic(
            n_per_class=args.per_class, classes=benchmark_classes()[: args.classes], seed=args.seed,
            image_size=size, patch_size=16, background="photo",
        )
        return samples.images, samples.texts, samples.object_masks
    if name == "clipart-photo-128":
        paths = (CLIPART_ROOT / "test.txt").read_text(encoding="utf-8").split()
        captions = {}
        for line in (CLIPART_ROOT / "captions.jsonl").read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            captions[entry["image"]] = entry["text"]
        dataset = ClipartOnPhotos(paths, [captions[p] for p in paths], [0] * len(paths),
                                  encoder=SampleEncoder.for_model(MODEL_NAME), seed=args.seed)
        images = np.stack([dataset.image(i) for i in range(len(paths))])
        return images, dataset.texts, np.stack([dataset.object_mask(i) for i in range(len(paths))])
    rng = np.random.default_rng(np.random.SeedSequence([args.seed, size]))
    shows = [source["shows"] for source in PHOTO_SOURCES.values()]
    images, which = photo_backgrounds(rng, args.crops * len(PHOTO_SOURCES), size, scale=(0.85, 1.0))
    return images, [f"a photo of {shows[w]}" for w in which], None


def measure(name: str, args: argparse.Namespace, model: MultimodalCLIPClassifier) -> dict:
    """The table of one source: ``{codec: {mean_record_nbytes, fraction_of_plain, exemplars_per_class,
    object_recall}}`` and the source's geometry."""
    images, texts, masks = load_source(name, args)
    size = images.shape[-1]
    patch_size = 16
    grid = size // patch_size
    encoder = SampleEncoder.for_model(MODEL_NAME)
    input_ids = torch.stack([encoder.encode_text(t) for t in texts])
    batch = MultimodalSample(image=torch.from_numpy(images), input_ids=input_ids, batch_size=[len(texts)])
    small = batch.image if size == 128 else F.interpolate(batch.image.float(), size=(128, 128), mode="bilinear",
                                                             antialias=True).round().clamp(0, 255).to(torch.uint8)
    scored = MultimodalSample(image=small, input_ids=input_ids, batch_size=[len(texts)])
    with torch.no_grad():
        scores = torch.cat([model.masking_scores(scored[i : i + 64]) for i in range(0, len(texts), 64)])
    scores = scores_on_grid(scores, grid)
    plain = plain_exemplar_nbytes(size, encoder.context_length)
    truth = None
    if masks is not None:
        truth = torch.from_numpy(masks.reshape(len(masks), grid, patch_size, grid, patch_size).any(axis=(2, 4)).reshape(len(masks), -1))
    table = {}
    for row, codec in codecs(patch_size, args.composed_qualities, args.extra_jpeg).items():
        records = [codec.encode(batch[i], scores[i], 0) for i in range(len(texts))]
        mean = float(np.mean([record.nbytes for record in records]))
        recall: float | None = None
        if truth is not None and getattr(records[0], "keep_mask", None) is not None:
            kept = torch.stack([torch.as_tensor(r.keep_mask).flatten().bool() for r in records])
            recall = round(float(((kept & truth).sum(1) / truth.sum(1).clamp(min=1)).mean()), 3)
        table[row] = {
            "mean_record_nbytes": round(mean, 1),
            "fraction_of_plain": round(mean / plain, 4),
            "exemplars_per_class": round(args.samples_per_class * plain / mean, 2),
            "object_recall": recall,
        }
    return {"image_size": size, "patch_size": patch_size, "records": len(texts), "plain_nbytes": plain, "codecs": table}


def format_markdown(results: dict) -> str:
    """One Markdown table: a row per codec, per source its bytes a record and exemplars a class."""
    sources = results["sources"]
    header = ["codec"] + [f"{name}: bytes / per class" for name in sources]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = next(iter(sources.values()))["codecs"]
    for row in rows:
        cells = [row]
        for table in sources.values():
            entry = table["codecs"][row]
            recall = "" if entry["object_recall"] is None else f" (recall {entry['object_recall']:.2f})"
            cells.append(f"{entry['mean_record_nbytes']:.0f} / {entry['exemplars_per_class']:.1f}{recall}")
        lines.append("| " + " | ".join(cells) + " |")
    geometry = "; ".join(f"{n}: {t['records']} records at {t['image_size']} px, plain {t['plain_nbytes']} B"
                         for n, t in sources.items())
    return (f"Bytes per record / exemplars per class at a budget of {results['arguments']['samples_per_class']:g} plain"
            f" exemplars a class ({geometry}). Masks from {MODEL_NAME} weights `{results['arguments']['weights']}`.\n\n"
            + "\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MultimodalCLIPClassifier(MODEL_NAME, pretrained=None if args.weights == "none" else args.weights).eval()
    results = {
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "command": " ".join(["regime_bytes.py", *(argv if argv is not None else sys.argv[1:])]),
        "torch": torch.__version__, "python": platform.python_version(),
        "sources": {name: measure(name, args, model) for name in args.sources},
    }
    text = format_markdown(results)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "regime_bytes.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "regime_bytes.md").write_text(text)
    return results


if __name__ == "__main__":
    main()
