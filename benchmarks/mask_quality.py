"""How well does the image mask find the object? Ground truth from the synthetic benchmark.

For each sample of the embedded benchmark's classes, the [CLS]->patch attention of the image
tower's last block gives an image mask (the paper's threshold rule, and top-ratio rules); we
report the fraction of patches kept, the *recall* of ground-truth object patches (object patches
kept / object patches) and its ratio to the recall of a random mask of the same size (which is the
kept fraction, in expectation). Also the text mask's kept-token fraction and how often the kept
tokens include the class words when the caption names them.

Usage::

    python benchmarks/mask_quality.py --out results/mask_quality.json
    # the model of a finished run, after its training (the run kept its checkpoint):
    python -m avalanche_exmask run CONFIG --out runs --keep-checkpoint
    python benchmarks/mask_quality.py --run runs/<config>_masking_seed0.json --classes 30
    # the 128 px model on the benchmark at 128 px over photographs, against the 64 px weights there:
    python benchmarks/mask_quality.py --model exmask-tiny-128 --pretrained real --background photo \
        --out results/regime-128/mask_quality_128.json
    python benchmarks/mask_quality.py --pretrained real --background photo --out results/regime-128/mask_quality_64.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from avalanche_exmask.benchmarks.synthetic import benchmark_classes, generate_synthetic
from avalanche_exmask.benchmarks.synthetic_render import BACKGROUND_COLOURS
from avalanche_exmask.config import ConfigError
from avalanche_exmask.data.encode import SampleEncoder
from avalanche_exmask.data.sample import MultimodalSample
from avalanche_exmask.experiment import load_trained_model
from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.masking.text_mask import TextMaskRule, class_name_token_ids, special_token_mask
from avalanche_exmask.models.classifier import MultimodalCLIPClassifier
from avalanche_exmask.models.factory import get_tokenizer

#: Words that describe only the part of a synthetic scene the object is not: background colours and
#: patterns, distractor size and counts. None is a class word.
SCENE_WORDS = (*BACKGROUND_COLOURS, "background", "plain", "tiled", "small", "more", "two", "three")

#: Text rules compared: the paper's attention rule and the class-name rule at several context ratios.
TEXT_RULES = {
    "paper: attention + context 0.2": TextMaskRule(class_source="attention", context_ratio=0.2),
    "names only": TextMaskRule(mode="class"),
    "names + context 0.2": TextMaskRule(context_ratio=0.2),
    "names + context 0.35": TextMaskRule(context_ratio=0.35),
    "names + context 0.5": TextMaskRule(context_ratio=0.5),
    "names + text-embedding context 0.2": TextMaskRule(context_source="text_embedding", context_ratio=0.2),
    "names + text-embedding context 0.35": TextMaskRule(context_source="text_embedding", context_ratio=0.35),
}


def text_mask_report(model, samples, classes, input_ids, scores, image_rule) -> dict[str, dict[str, float]]:
    """Per text rule: kept-token fraction, class-word survival, embedding cosine, context precision.

    * ``class_word_recall``: in captions that name the class, the fraction of class-name tokens kept;
    * ``text_cosine``: cosine between the text tower's embedding of the masked and original ids;
    * ``context_scene_precision``: among kept tokens that are neither special nor class words, the
      fraction of scene words (:data:`SCENE_WORDS`), beside ``context_scene_chance``, that fraction
      among all such tokens of the captions (what a random choice would get).
    """
    tokenizer = get_tokenizer(model.model_name)
    names = class_name_token_ids([c.name for c in classes], tokenizer)
    scene = class_name_token_ids([" ".join(SCENE_WORDS)], tokenizer)[0]
    labels = torch.as_tensor(samples.labels)
    named = torch.as_tensor(samples.names_attributes)
    special = special_token_mask(input_ids)
    real = input_ids != 0
    class_words = torch.stack([torch.isin(input_ids[i], names[int(labels[i])]) for i in range(len(labels))]) & real & ~special
    other = real & ~special & ~class_words
    is_scene = torch.isin(input_ids, scene) & other
    with torch.no_grad():
        original = torch.nn.functional.normalize(model.clip.encode_text(input_ids), dim=-1)
        scores = scores.clone()
        scores.token_importance = model.token_importance(input_ids)
    report = {}
    for name, rule in TEXT_RULES.items():
        keep = torch.stack([
            rule(input_ids[i], scores[i], image_rule(scores.patch_attention[i]), names[int(labels[i])])
            for i in range(len(labels))
        ])
        masked_ids = torch.zeros_like(input_ids)
        for i in range(len(labels)):
            kept = input_ids[i][keep[i]]
            masked_ids[i, : len(kept)] = kept
        with torch.no_grad():
            masked = torch.nn.functional.normalize(model.clip.encode_text(masked_ids), dim=-1)
        kept_other = keep & other
        report[f"text: {name}"] = {
            "kept_token_fraction": float((keep.sum(1) / real.sum(1)).mean()),
            "class_word_recall": float((keep & class_words)[named].sum() / class_words[named].sum()),
            "text_cosine": float((masked * original).sum(-1).mean()),
            "context_scene_precision": float((kept_other & is_scene).sum() / kept_other.sum().clamp(min=1)),
            "context_scene_chance": float(is_scene.sum() / other.sum()),
        }
    return report


def object_recall(kept: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per sample, ground-truth object patches kept / object patches (``kept``, ``truth``: bool
    ``[N, patches]``): ``float [N]``."""
    return (kept & truth).sum(1).float() / truth.sum(1).clamp(min=1)


def measured_model(
    run: Path | None, pretrained: str, image_attention: str | int | None = None, model_name: str = "exmask-tiny"
) -> MultimodalCLIPClassifier:
    """The model a measurement scores with, in eval mode: a finished run's trained model (``run``, its
    results JSON with the checkpoint kept beside it) or ``model_name`` with the ``pretrained``
    weights tag (``"none"``: random weights). ``image_attention`` overrides the scores' source (``None``:
    the run's own, or the last block). Exits naming the file if the run cannot be loaded."""
    if run is not None:
        try:
            return load_trained_model(run, image_attention=image_attention)
        except ConfigError as error:
            raise SystemExit(f"error: {error}") from None
    return MultimodalCLIPClassifier(
        model_name,
        pretrained=None if pretrained == "none" else pretrained,
        image_attention="last" if image_attention is None else image_attention,
    ).eval()


def scored_samples(model, classes, per_class: int, seed: int, background: str = "default"):
    """``per_class`` generated samples of each of ``classes`` at the model's resolution and patch grid
    (``background``: see :func:`generate_synthetic`), the model batch of them (token ids ``long [B, T]``)
    and ``model``'s masking scores (batched, ``B`` leading)."""
    encoder = SampleEncoder.for_model(model.model_name)
    samples = generate_synthetic(n_per_class=per_class, classes=classes, seed=seed, image_size=encoder.image_size,
                                 patch_size=model.patch_size, background=background)
    input_ids = torch.stack([encoder.encode_text(t) for t in samples.texts])
    batch = MultimodalSample(image=torch.from_numpy(samples.images), input_ids=input_ids, batch_size=[len(samples)])
    with torch.no_grad():
        scores = torch.cat([model.masking_scores(batch[i : i + 100]) for i in range(0, len(samples), 100)])
    return samples, batch, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pretrained", default="synthetic", help="a shipped tag ('synthetic', 'real'), a file, or 'none' for random weights"
    )
    parser.add_argument("--model", default="exmask-tiny", help="the model config (exmask-tiny-128: 128 px, 16-pixel patches)")
    parser.add_argument("--background", choices=("default", "photo"), default="default", help="the benchmark's backgrounds")
    parser.add_argument("--image-attention", default="last", help="'last' (the paper), 'rollout' or a block index")
    parser.add_argument("--run", type=Path, default=None,
                        help="a run's results JSON: measure its trained model, loaded from the checkpoint beside it "
                             "(<results>.ckpt.safetensors, kept by `run --keep-checkpoint`); --pretrained is then ignored")
    parser.add_argument("--out", default="results/mask_quality.json")
    args = parser.parse_args()
    torch.set_num_threads(2)

    classes = benchmark_classes()[: args.classes]
    source = int(args.image_attention) if args.image_attention.lstrip("-").isdigit() else args.image_attention
    model = measured_model(args.run, args.pretrained, image_attention=source, model_name=args.model)
    samples, batch, scores = scored_samples(model, classes, args.per_class, args.seed, args.background)
    input_ids = batch.input_ids
    truth = torch.from_numpy(samples.object_patch_masks)
    rules = {
        "threshold tau=1.0 (paper)": ImageMaskRule(kind="threshold", tau=1.0),
        "threshold tau=1.5": ImageMaskRule(kind="threshold", tau=1.5),
        "ratio 0.25": ImageMaskRule(kind="ratio", ratio=0.25),
        "ratio 0.35": ImageMaskRule(kind="ratio", ratio=0.35),
    }
    report: dict[str, dict[str, float]] = {}
    for name, rule in rules.items():
        kept = torch.stack([rule(scores.patch_attention[i]) for i in range(len(samples))])
        kept_fraction = kept.float().mean(dim=1)
        recall = object_recall(kept, truth)
        report[name] = {
            "kept_patch_fraction": float(kept_fraction.mean()),
            "object_recall": float(recall.mean()),
            "random_mask_recall": float(kept_fraction.mean()),
            "recall_over_random": float(recall.mean() / kept_fraction.mean()),
            "object_patch_fraction": float(truth.float().mean()),
        }
    report.update(text_mask_report(model, samples, classes, input_ids, scores, rules["threshold tau=1.0 (paper)"]))
    output = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "report": report}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(output, indent=1))
    for name, values in report.items():
        print(f"{name:<28} " + "  ".join(f"{k}={v:.3f}" for k, v in values.items()))


if __name__ == "__main__":
    main()
