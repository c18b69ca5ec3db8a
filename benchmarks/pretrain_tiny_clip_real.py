"""Pretrain ``exmask-tiny`` on real clip art and emoji (the shipped ``pretrained="real"`` weights).

The successor of ``pretrain_tiny_clip.py``: the same contrastive image-text loss plus attention
prior, on real material (:mod:`clipart_material`): openclipart-png (public domain) and the Twemoji
(CC BY 4.0) and Noto (Apache 2.0) emoji of emoji-datasource, each object composited over a
background and clutter of other objects. Captions name the clip art's title and its folder, or the
emoji's name with its category, subcategory and short names. The attention prior's target is the
object's *own* alpha mask: the last image block's head-averaged [CLS]->patch attention is pulled
towards the uniform distribution over the patches holding object pixels (``KL(target ||
attention)``, weight ``--attention-prior-weight``), so the [CLS] token looks at the captioned object
and not at the clutter behind it.

The categories of the embedded real-image benchmark
(:data:`avalanche_exmask.benchmarks.clipart.HELD_OUT`) are kept out of the pretraining pool (their
folders, the emoji subcategories of the same concepts, byte-identical copies and titles naming
them), so ``transfer_eval.py`` measures transfer to categories the model has not seen.

Batches follow the synthetic recipe (one sample of each of many classes per step): every step
draws ``--batch-size`` distinct *groups* (openclipart folders and emoji subcategories, 234 of
them) and one object of each, composited from a seed derived from ``(seed, step)``; a run is
reproducible with the same arguments, material and thread count. Two findings set the defaults:
starting from the ``synthetic`` weights (``--init synthetic``) the first real batches are confidently
wrong and the embeddings collapse (contrastive loss pinned at ``ln(batch size)`` for 50+ steps, even
with the similarity scale reset or a 10x lower learning rate), so the default starts from random
weights with the synthetic recipe's learning rate; and captions that carry only the title give the
tiny model no shared signal, so every caption names the item's folder or emoji category.

Maintainer command (installs the material outside the repository, trains, evaluates)::

    make real-weights

The input geometry is an argument: ``--image-size 64 --patch-size 8`` (the default) trains
``exmask-tiny`` and writes ``exmask-tiny-real``; ``--image-size 128 --patch-size 16`` trains
``exmask-tiny-128`` (the same widths and depths, the same 64 image tokens) on material decoded at
128 px (its own cache, ``clipart-material-128.npz``) and writes ``exmask-tiny-128-real``. Nothing else
changes: the same recipe, steps, batches and seeds.

which runs ``apt-get install -y openclipart-png``, ``npm install --prefix ~/.cache/avalanche-exmask-real/npm
emoji-datasource@16.0.0 emoji-datasource-twitter@16.0.0 emoji-datasource-google@16.0.0``, then
``benchmarks/build_clipart_benchmark.py``, this script and ``benchmarks/transfer_eval.py``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clipart_material import MAINTAINER_DIR, SOURCES, caption, composite, patch_mask, pretraining_material  # noqa: E402
from pretrain_tiny_clip import _QueryCapture, attention_prior_loss, learning_rate, normalise, save_weights  # noqa: E402

from avalanche_exmask.benchmarks.clipart import HELD_OUT  # noqa: E402
from avalanche_exmask.models.factory import PACKAGED_WEIGHTS, create_clip, register_packaged_configs  # noqa: E402


def model_for_geometry(image_size: int, patch_size: int) -> str:
    """The shipped model config (a key of ``PACKAGED_WEIGHTS``) with this input geometry.

    :raises ValueError: naming the geometries there are, if none has this one.
    """
    register_packaged_configs()
    geometries = {}
    for name in PACKAGED_WEIGHTS:
        vision = open_clip.get_model_config(name)["vision_cfg"]
        geometries[(vision["image_size"], vision["patch_size"])] = name
    if (image_size, patch_size) not in geometries:
        raise ValueError(f"no shipped model config at {image_size} px with {patch_size}-pixel patches; there are "
                         + ", ".join(f"{n} ({s} px, {p}-pixel patches)" for (s, p), n in sorted(geometries.items())))
    return geometries[(image_size, patch_size)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--openclipart", type=Path, default=Path("/usr/share/openclipart/png"),
                        help="the png folder of Debian's openclipart-png")
    parser.add_argument("--emoji", type=Path, default=MAINTAINER_DIR / "npm" / "node_modules",
                        help="node_modules holding emoji-datasource, -twitter and -google")
    parser.add_argument("--cache", type=Path, default=None,
                        help="decoded material (written on first use; delete it after changing the sources); default "
                             f"{MAINTAINER_DIR}/clipart-material.npz at 64 px, clipart-material-<size>.npz otherwise")
    parser.add_argument("--image-size", type=int, default=64, help="input resolution, pixels (64 or 128)")
    parser.add_argument("--patch-size", type=int, default=8, help="patch side, pixels (8 at 64 px, 16 at 128 px)")
    parser.add_argument("--steps", type=int, default=1200, help="optimiser steps (one batch each)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of AdamW")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=float, default=0.05, help="fraction of steps of linear warm-up")
    parser.add_argument("--attention-prior-weight", type=float, default=1.0,
                        help="weight of KL(object patches || last block's [CLS] attention); 0 disables it")
    parser.add_argument("--init", choices=("synthetic", "none"), default="none",
                        help="start from the shipped synthetic weights or from random ones")
    parser.add_argument("--init-logit-scale", type=float, default=1 / 0.07,
                        help="reset the similarity scale to this (open_clip's initial 1/0.07); the synthetic weights'"
                             " scale of 100 makes the first real batches confidently wrong and the embeddings collapse"
                             " (contrastive loss stuck at ln(batch size)); a negative value keeps the loaded scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the run is reproducible with the same count)")
    parser.add_argument("--output", type=Path, default=None,
                        help="weights file (.safetensors); its .json record is written beside it; default the"
                             " shipped `real` weights of the geometry's model")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        args.model_name = model_for_geometry(args.image_size, args.patch_size)
    except ValueError as error:
        parser.error(f"--image-size/--patch-size: {error}")
    if args.cache is None:
        suffix = "" if args.image_size == 64 else f"-{args.image_size}"
        args.cache = MAINTAINER_DIR / f"clipart-material{suffix}.npz"
    if args.output is None:
        args.output = PACKAGED_WEIGHTS[args.model_name]["real"]
    for path, what in ((args.openclipart, "--openclipart"), (args.emoji / "emoji-datasource", "--emoji")):
        if not path.exists() and not args.cache.is_file():
            parser.error(f"{what}: {path} not found (install the material first: make real-weights)")
    if args.attention_prior_weight < 0:
        parser.error(f"--attention-prior-weight must be >= 0; got {args.attention_prior_weight}")
    if args.init == "synthetic" and "synthetic" not in PACKAGED_WEIGHTS[args.model_name]:
        parser.error(f"--init synthetic: no synthetic weights ship for {args.model_name}")
    if args.init_logit_scale is not None and args.init_logit_scale <= 0:
        args.init_logit_scale = None
    return args


def make_batch(material, indices: np.ndarray, rng: np.random.Generator, patch_size: int):
    """``uint8 [B, 3, S, S]`` images, ``B`` captions and ``bool [B, N]`` object patches."""
    images, masks, texts = [], [], []
    for index in indices:
        image, pixels = composite(material, material.objects[index], material.extents[index], rng, skip=int(index))
        images.append(image.transpose(2, 0, 1))
        masks.append(patch_mask(pixels, patch_size))
        texts.append(caption(material.items[int(index)], rng))
    return torch.from_numpy(np.stack(images)), texts, torch.from_numpy(np.stack(masks))


def pretrain(args: argparse.Namespace, material) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(args.seed)
    model = create_clip(args.model_name, "synthetic" if args.init == "synthetic" else None)
    if args.init_logit_scale is not None:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(args.init_logit_scale))
    tokenizer = open_clip.get_tokenizer(args.model_name)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    loss_fn = open_clip.ClipLoss()
    patch_size = model.visual.patch_size[0]
    groups = material.groups()
    capture = _QueryCapture(model.visual.transformer.resblocks[-1].attn) if args.attention_prior_weight > 0 else None
    contrastive_losses: list[float] = []
    prior_losses: list[float] = []
    model.train()
    start = time.perf_counter()
    progress = tqdm(range(args.steps), desc="pretraining", disable=args.quiet)
    for step in progress:
        rng = np.random.default_rng(np.random.SeedSequence([args.seed, step]))
        chosen = rng.choice(len(groups), size=min(args.batch_size, len(groups)), replace=False)
        indices = np.array([groups[g][rng.integers(len(groups[g]))] for g in chosen])
        images, texts, object_patches = make_batch(material, indices, rng, patch_size)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        image_features, text_features, logit_scale = model(normalise(images, model), tokenizer(texts))
        contrastive = loss_fn(image_features, text_features, logit_scale)
        loss = contrastive
        if capture is not None:
            prior = attention_prior_loss(capture.cls_attention(), object_patches)
            capture.call = None
            loss = contrastive + args.attention_prior_weight * prior
            prior_losses.append(prior.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        contrastive_losses.append(contrastive.item())
        progress.set_postfix(contrastive=f"{contrastive_losses[-1]:.3f}",
                             prior=f"{prior_losses[-1]:.3f}" if prior_losses else "-")
    if capture is not None:
        capture.remove()

    def final(values: list[float]) -> float | None:
        return round(float(np.mean(values[-20:])), 4) if values else None

    record = {
        "model_name": args.model_name,
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "model_name"},
        "train_seconds": round(time.perf_counter() - start, 1),
        "final_contrastive_loss": final(contrastive_losses),
        "final_attention_prior_loss": final(prior_losses),
        "contrastive_loss_every_50_steps": [round(v, 4) for v in contrastive_losses[::50]],
        "attention_prior_loss_every_50_steps": [round(v, 4) for v in prior_losses[::50]],
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
    }
    return model, record


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    register_packaged_configs()
    material, summary = pretraining_material(args.openclipart, args.emoji, cache=args.cache, tile=args.image_size)
    if not args.quiet:
        print(json.dumps(summary), flush=True)
    model, record = pretrain(args, material)
    save_weights(model, args.output, args.model_name)
    record.update({
        "material": summary,
        "sources": SOURCES,
        "held_out_categories": [c.name for c in HELD_OUT],
        "weights_bytes": args.output.stat().st_size,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    })
    args.output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    write_licences(args.output, record)
    return record


def write_licences(weights: Path, record: dict) -> Path:
    """Write ``<weights stem>.LICENSES.md`` beside the weights: the material and its licences."""
    material = record["material"]
    lines = [
        f"# Licences of the material behind `{weights.name}`",
        "",
        f"`{weights.name}` ({record['model_name']}, fp16) was pretrained by `benchmarks/pretrain_tiny_clip_real.py`"
        f" ({record['arguments']['steps']} steps of {record['arguments']['batch_size']} composited images, starting"
        f" from the `{record['arguments']['init']}` weights) on {material['objects']} objects"
        f" ({', '.join(f'{k}: {v}' for k, v in material['objects_by_source'].items())}) and"
        f" {material['backgrounds']} opaque openclipart backgrounds:",
        "",
    ]
    lines += [f"* {key}: {value['package']}; {value['licence']}." for key, value in record["sources"].items()]
    lines += [
        "",
        "Twemoji graphics are (c) Twitter, Inc. and other contributors, licensed under CC BY 4.0"
        " (https://creativecommons.org/licenses/by/4.0/); Noto Emoji images are (c) Google Inc., licensed"
        " under the Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0). The weights are a model"
        " trained on these images; no image is shipped with them. openmoji (CC BY-SA 4.0) was not used.",
        "",
        "Held-out categories (kept out of pretraining, used by the embedded `clipart` benchmark): "
        + ", ".join(record["held_out_categories"]) + ".",
        "",
    ]
    path = weights.with_name(weights.stem + ".LICENSES.md")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


if __name__ == "__main__":
    main()
