"""Pretrain the tiny CLIP model (``exmask-tiny``) contrastively on synthetic image+caption pairs.

The model sees only the *pretraining* classes of the synthetic catalogue
(:func:`avalanche_exmask.benchmarks.synthetic.pretraining_classes`), disjoint from the classes
of the embedded benchmark. Every step draws a fresh batch holding one sample of each pretraining
class (192 samples) from a seed derived from ``(seed, step)``, so a run is reproducible by
rerunning it with the same arguments and thread count. Captions come from the benchmark's own
generator, but name the object's attributes more often (``--attribute-prob``).

Attention prior. The exemplar masking of the method keeps the patches that the [CLS] token of
the image tower's *last* block attends to (mean over heads). It relies on a property of large
pretrained CLIP/ViLT models: their [CLS] attention is object-centric. The tiny model stands in for
such a model, but contrastive training alone (10-20 minutes on a CPU) does not give it that
property: its last block's [CLS] attention ends up *avoiding* the object (top 30% of patches
cover about 15% of the object, below the 30% of a random choice). So the loss adds, with weight
``--attention-prior-weight`` (0 disables it and reproduces plain contrastive training), an
auxiliary term that makes the last block's head-averaged [CLS]->patch attention, renormalised
over the patches, match the ground-truth object patch distribution (the object's patches,
uniformly): ``KL(target || attention)``. This emulates the prior that a large pretrained model
brings; it is not part of the method. The supervision uses only the *pretraining* classes, and the
evaluation measures the coverage on the disjoint *benchmark* classes, so the coverage reported
there is a generalisation of the prior, not a fit to the benchmark. The contrastive loss stays the
main objective; the prior shapes where the last block's [CLS] token looks (its gradient reaches the
earlier blocks through the last block's queries and keys), not what the embeddings must encode.

The result is written as fp16 safetensors (loaded by ``create_clip("exmask-tiny", "synthetic")``,
which casts to the model's dtype) with a JSON record beside it: arguments, loss curve, time and,
unless ``--skip-evaluation``, an evaluation on the benchmark classes comparing pretrained and
random weights: linear-probe accuracy (image+text, image only, text only) and how well the
top-30% [CLS]->patch attention of each image block (and the bottom 30% of the last block's)
covers the ground-truth object patches; for the last block also the top 35% and the threshold rule
"attention >= its mean over the patches".

Reproduce the packaged weights (about 15 minutes on 2 CPU cores)::

    .venv/bin/python benchmarks/pretrain_tiny_clip.py
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from avalanche_exmask.benchmarks.synthetic import generate_synthetic, pretraining_classes, synthetic_multimodal
from avalanche_exmask.models.attention import AttentionRecorder, attention_probabilities
from avalanche_exmask.models.factory import PACKAGED_WEIGHTS, create_clip, register_packaged_configs

MODEL_NAME = "exmask-tiny"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="optimiser steps (one batch each)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of AdamW")
    parser.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (matrices only)")
    parser.add_argument("--warmup", type=float, default=0.05, help="fraction of steps of linear warm-up")
    parser.add_argument(
        "--attribute-prob", type=float, default=0.8, help="probability that a caption names the object"
    )
    parser.add_argument(
        "--attention-prior-weight",
        type=float,
        default=1.0,
        help="weight of the auxiliary loss KL(object patches || last block's [CLS] attention); 0 disables it",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and of the data")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixes the float reduction order)")
    parser.add_argument(
        "--output",
        type=Path,
        default=PACKAGED_WEIGHTS[MODEL_NAME]["synthetic"],
        help="weights file to write (.safetensors); a .json record is written beside it",
    )
    parser.add_argument("--skip-evaluation", action="store_true", help="do not evaluate on the benchmark classes")
    parser.add_argument(
        "--evaluate-only", action="store_true", help="evaluate the weights at --output and update their record"
    )
    parser.add_argument("--eval-classes", type=int, default=20, help="benchmark classes used by the evaluation")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.attention_prior_weight < 0:
        parser.error(f"--attention-prior-weight must be >= 0; got {args.attention_prior_weight}")
    return args


def normalise(images: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``uint8 [B, 3, S, S]`` -> float ``[B, 3, S, S]`` normalised with the model's mean and std."""
    config = model.visual.preprocess_cfg
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def learning_rate(step: int, steps: int, peak: float, warmup: float) -> float:
    """Linear warm-up over ``warmup * steps`` steps, then cosine decay to 0."""
    warmup_steps = max(1, int(warmup * steps))
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


class _QueryCapture:
    """Forward pre-hook (``with_kwargs=True``) on an ``nn.MultiheadAttention`` keeping its call's
    query, key and mask, so the attention can be recomputed differentiably after the forward."""

    def __init__(self, attn: nn.MultiheadAttention) -> None:
        self.attn = attn
        self.call: tuple | None = None
        self._handle = attn.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> None:
        query = args[0] if args else kwargs["query"]
        key = args[1] if len(args) > 1 else kwargs.get("key", query)
        self.call = (query, key, kwargs.get("attn_mask"))

    def cls_attention(self) -> torch.Tensor:
        """``[B, N]`` head-averaged [CLS]->patch attention of the last call, renormalised over the patches."""
        query, key, attn_mask = self.call
        patches = attention_probabilities(self.attn, query, key, attn_mask)[:, 0, 1:]
        return patches / patches.sum(dim=1, keepdim=True)

    def remove(self) -> None:
        self._handle.remove()


def attention_prior_loss(attention: torch.Tensor, object_patches: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean ``KL(target || attention)``, the target being uniform over each sample's object patches.

    :param attention: float ``[B, N]``, rows summing to 1.
    :param object_patches: bool ``[B, N]``; samples without object patches are ignored.
    """
    target = object_patches.float()
    counts = target.sum(dim=1, keepdim=True)
    valid = counts.squeeze(1) > 0
    target = target[valid] / counts[valid]
    log_target = torch.log(target.clamp_min(eps))
    log_attention = torch.log(attention[valid].clamp_min(eps))
    return (target * (log_target - log_attention)).sum(dim=1).mean()


def pretrain(args: argparse.Namespace) -> tuple[nn.Module, dict]:
    """Contrastive training (plus the attention prior unless its weight is 0); returns the model and
    a record of the run."""
    torch.manual_seed(args.seed)
    model = open_clip.create_model(MODEL_NAME, pretrained=None)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
    )
    loss_fn = open_clip.ClipLoss()
    classes = pretraining_classes()
    image_size = model.visual.image_size[0]
    patch_size = model.visual.patch_size[0]
    losses: list[float] = []
    contrastive_losses: list[float] = []
    prior_losses: list[float] = []
    # The [CLS] attention is only computed (and supervised) when the prior is on, so a weight of 0
    # runs exactly the plain contrastive training.
    capture = _QueryCapture(model.visual.transformer.resblocks[-1].attn) if args.attention_prior_weight > 0 else None
    model.train()
    start = time.perf_counter()
    progress = tqdm(range(args.steps), desc="pretraining", disable=args.quiet)
    for step in progress:
        batch = generate_synthetic(
            n_per_class=1,
            classes=classes,
            seed=int(np.random.SeedSequence([args.seed, step]).generate_state(1)[0]),
            image_size=image_size,
            patch_size=patch_size,
            attribute_prob=args.attribute_prob,
        )
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        image_features, text_features, logit_scale = model(
            normalise(torch.from_numpy(batch.images), model), tokenizer(batch.texts)
        )
        contrastive = loss_fn(image_features, text_features, logit_scale)
        loss = contrastive
        if capture is not None:
            prior = attention_prior_loss(capture.cls_attention(), torch.from_numpy(batch.object_patch_masks))
            capture.call = None
            loss = contrastive + args.attention_prior_weight * prior
            prior_losses.append(prior.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        contrastive_losses.append(contrastive.item())
        postfix = {"loss": f"{losses[-1]:.3f}", "contrastive": f"{contrastive_losses[-1]:.3f}"}
        if prior_losses:
            postfix["prior"] = f"{prior_losses[-1]:.3f}"
        progress.set_postfix(postfix)
    seconds = time.perf_counter() - start
    if capture is not None:
        capture.remove()
    tail = losses[-20:]

    def final(values: list[float]) -> float | None:
        return round(float(np.mean(values[-20:])), 4) if values else None

    record = {
        "model_name": MODEL_NAME,
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "batch_size": len(classes),
        "pretraining_classes": len(classes),
        "train_seconds": round(seconds, 1),
        "final_loss": round(float(np.mean(tail)), 4) if tail else None,
        "loss_every_50_steps": [round(v, 4) for v in losses[::50]],
        "attention_prior_weight": args.attention_prior_weight,
        "final_contrastive_loss": final(contrastive_losses),
        "final_attention_prior_loss": final(prior_losses),
        "contrastive_loss_every_50_steps": [round(v, 4) for v in contrastive_losses[::50]],
        "attention_prior_loss_every_50_steps": [round(v, 4) for v in prior_losses[::50]],
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
    }
    return model, record


def save_weights(model: nn.Module, path: Path, model_name: str = MODEL_NAME) -> None:
    """Write the state dict as fp16 safetensors, ``model_name`` in its metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"model_name": model_name, "dtype": "float16"})


@torch.no_grad()
def encode(model: nn.Module, images: torch.Tensor, input_ids: torch.Tensor, batch_size: int = 256) -> dict:
    """Normalised image and text embeddings ``[n, E]`` and, per image block, the head-averaged
    [CLS]->patch attention ``[n, N]`` (keys ``attention_0`` ... ``attention_{L-1}``)."""
    model.eval()
    blocks = model.visual.transformer.resblocks
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        with ExitStack() as stack:
            recorders = [stack.enter_context(AttentionRecorder(block.attn)) for block in blocks]
            image = model.encode_image(normalise(images[start : start + batch_size], model), normalize=True)
        text = model.encode_text(input_ids[start : start + batch_size], normalize=True)
        batch = {"image": image, "text": text}
        batch.update({f"attention_{i}": r.probabilities[:, 0, 1:] for i, r in enumerate(recorders)})
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)
    return {k: torch.cat(v) for k, v in parts.items()}


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    """Test accuracy (%) of a softmax classifier fitted on frozen features (full batch, L-BFGS)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    n_classes = int(train_y.max()) + 1
    generator = torch.Generator().manual_seed(0)
    head = nn.Linear(train_x.shape[1], n_classes)
    nn.init.normal_(head.weight, std=0.01, generator=generator)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(head(train_x), train_y) + 1e-3 * head.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return round(100.0 * (head(test_x).argmax(1) == test_y).float().mean().item(), 2)


def attention_coverage(attention: torch.Tensor, object_patches: torch.Tensor, keep: float = 0.3) -> dict:
    """How well the top ``keep`` fraction of patches by attention covers the object patches.

    :param attention: float ``[n, N]`` [CLS]->patch attention.
    :param object_patches: bool ``[n, N]`` ground truth.
    :return: mean precision (object patches among the kept ones, %), recall (kept object
        patches among all object patches, %), and the precision of a random choice (%).
    """
    k = max(1, round(keep * attention.shape[1]))
    kept = torch.zeros_like(object_patches).scatter_(1, attention.topk(k, dim=1).indices, True)
    hits = (kept & object_patches).sum(1).float()
    return {
        "precision": round(100.0 * (hits / k).mean().item(), 2),
        "recall": round(100.0 * (hits / object_patches.sum(1)).mean().item(), 2),
        "random_precision": round(100.0 * object_patches.float().mean().item(), 2),
    }


def threshold_coverage(attention: torch.Tensor, object_patches: torch.Tensor) -> dict:
    """Coverage of the object by the patches whose attention is at least the mean over the patches.

    :return: mean precision and recall (%) as :func:`attention_coverage`, and the mean fraction of
        patches kept (%).
    """
    kept = attention >= attention.mean(dim=1, keepdim=True)
    hits = (kept & object_patches).sum(1).float()
    return {
        "precision": round(100.0 * (hits / kept.sum(1).clamp_min(1)).mean().item(), 2),
        "recall": round(100.0 * (hits / object_patches.sum(1)).mean().item(), 2),
        "kept_fraction": round(100.0 * kept.float().mean().item(), 2),
    }


def evaluate(pretrained: nn.Module, seed: int, n_classes: int) -> dict:
    """Compare ``pretrained`` with random weights on the default benchmark's classes."""
    scenario = synthetic_multimodal(n_classes=n_classes, n_experiences=1, seed=seed, model_name=MODEL_NAME)
    train, test = scenario.train_dataset, scenario.test_dataset
    train_y, test_y = torch.tensor(train.targets), torch.tensor(test.targets)
    torch.manual_seed(seed)
    random_init = open_clip.create_model(MODEL_NAME, pretrained=None)
    results: dict = {
        "benchmark": {
            "n_classes": n_classes,
            "train_samples": len(train),
            "test_samples": len(test),
            "seed": seed,
            "chance_accuracy": round(100.0 / n_classes, 2),
        }
    }
    for name, model in (("pretrained", pretrained), ("random_init", random_init)):
        tr = encode(model, train.images, train.input_ids)
        te = encode(model, test.images, test.input_ids)
        last = len(model.visual.transformer.resblocks) - 1
        fused = lambda f: torch.cat([f["image"], f["text"]], dim=1)  # noqa: E731
        results[name] = {
            "linear_probe_accuracy": {
                "image_text": linear_probe(fused(tr), train_y, fused(te), test_y),
                "image": linear_probe(tr["image"], train_y, te["image"], test_y),
                "text": linear_probe(tr["text"], train_y, te["text"], test_y),
            },
            "cls_attention_top30_object_coverage": {
                f"block_{i}": attention_coverage(te[f"attention_{i}"], test.object_patch_masks)
                for i in range(len(model.visual.transformer.resblocks))
            },
            "cls_attention_bottom30_object_coverage_last_block": attention_coverage(
                -te[f"attention_{last}"], test.object_patch_masks
            ),
            "cls_attention_object_coverage_last_block": {
                "top30": attention_coverage(te[f"attention_{last}"], test.object_patch_masks, keep=0.3),
                "top35": attention_coverage(te[f"attention_{last}"], test.object_patch_masks, keep=0.35),
                "above_mean": threshold_coverage(te[f"attention_{last}"], test.object_patch_masks),
            },
        }
    return results


def main(argv: Sequence[str] | None = None) -> dict:
    """Run pretraining (or only evaluation), write weights and record; return the record."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    register_packaged_configs()
    record_path = args.output.with_suffix(".json")
    if args.evaluate_only:
        model = create_clip(MODEL_NAME, args.output)
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    else:
        model, record = pretrain(args)
        save_weights(model, args.output)
        record["weights_bytes"] = args.output.stat().st_size
        record["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
        # Evaluate what was shipped: the fp16 weights, cast back on load.
        model = create_clip(MODEL_NAME, args.output)
    if not args.skip_evaluation:
        record["evaluation"] = evaluate(model, args.seed, args.eval_classes)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    if not args.quiet:
        print(json.dumps(record.get("evaluation", {}), indent=2))
    return record


if __name__ == "__main__":
    main()
