"""Build the embedded real-image benchmark (``avalanche_exmask/benchmarks/resources/clipart``).

A maintainer step (``make real-weights`` runs it): reads the held-out categories'
(:data:`avalanche_exmask.benchmarks.clipart.HELD_OUT`) public-domain images from Debian's
``openclipart-png`` and writes the :func:`~avalanche_exmask.benchmarks.clipart.clipart` layout.
Per category, the images directly inside its folder, without byte-identical copies in another
category's folder, ordered by the SHA-256 of their bytes, the first ``--per-class`` kept; every
``--test-every``-th of them (in that order) is a test image. Each image is the clip art composited
(:func:`clipart_material.composite`) over a background and clutter taken from the *pretraining*
material (other categories; openclipart only, so that everything shipped is public domain), saved as a 64 px JPEG; its caption is its title
(the cleaned file
name, which need not name the category), and its object mask (alpha >= 0.5) is stored bit-packed;
images whose mask covers under ``--min-object`` of the pixels (faint line art) are left out.
Deterministic for a given ``--seed``, material and Pillow version.

    python benchmarks/build_clipart_benchmark.py --openclipart /usr/share/openclipart/png \\
        --emoji ~/.cache/avalanche-exmask-real/npm/node_modules
"""
from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clipart_material import (  # noqa: E402
    MAINTAINER_DIR,
    SOURCES,
    Material,
    clean_title,
    composite,
    fit_tile,
    object_extent,
    pretraining_material,
    read_rgba,
    sha256,
)

from avalanche_exmask.benchmarks.clipart import CLIPART_ROOT, HELD_OUT  # noqa: E402

_CAPTIONS = ("{title}", "a clip art of {title}", "a drawing of {title}", "a picture of {title}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--openclipart", type=Path, default=Path("/usr/share/openclipart/png"))
    parser.add_argument("--emoji", type=Path, default=MAINTAINER_DIR / "npm" / "node_modules")
    parser.add_argument("--cache", type=Path, default=MAINTAINER_DIR / "clipart-material.npz")
    parser.add_argument("--per-class", type=int, default=40, help="images per category at most")
    parser.add_argument("--test-every", type=int, default=4, help="every n-th image is a test image")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--min-object", type=float, default=0.02,
                        help="leave out images whose object mask covers less than this fraction of the pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=CLIPART_ROOT)
    args = parser.parse_args(argv)
    if not args.openclipart.is_dir():
        parser.error(f"--openclipart: {args.openclipart} not found (apt-get install -y openclipart-png)")
    return args


def category_files(root: Path) -> dict[str, list[tuple[str, Path]]]:
    """``{category: [(sha256, path), ...]}`` sorted by hash, byte-identical copies across
    categories (and within one) removed."""
    found = {c.name: [(sha256(p), p) for p in sorted((root / c.folder).glob("*.png"))] for c in HELD_OUT}
    owners: dict[str, set[str]] = {}
    for name, files in found.items():
        for digest, _ in files:
            owners.setdefault(digest, set()).add(name)
    out = {}
    for name, files in found.items():
        unique: dict[str, Path] = {}
        for digest, path in files:
            if len(owners[digest]) == 1:
                unique.setdefault(digest, path)
        out[name] = sorted(unique.items())
    return out


def public_domain_only(material: Material) -> Material:
    """The openclipart part of the material (so that every pixel shipped is public domain)."""
    keep = np.array([i for i, item in enumerate(material.items) if item.source == "openclipart"])
    return Material(material.objects[keep], material.extents[keep], [material.items[i] for i in keep],
                    material.backgrounds)


def build(args: argparse.Namespace) -> dict:
    material = public_domain_only(pretraining_material(args.openclipart, args.emoji, cache=args.cache)[0])
    rng = np.random.default_rng(args.seed)
    if args.output.exists():
        shutil.rmtree(args.output)
    (args.output / "images").mkdir(parents=True)
    captions, masks, sources, train, test = [], {}, [], [], []
    for name, files in category_files(args.openclipart).items():
        kept = 0
        for digest, path in files:
            if kept == args.per_class:
                break
            image = read_rgba(path)
            tile = fit_tile(image) if image is not None else None
            if tile is None:
                continue
            pixels, mask = composite(material, tile, object_extent(tile), rng, scale=(0.45, 0.85), clutter=(0, 2))
            if mask.mean() < args.min_object:
                continue  # line art whose alpha is mostly below 0.5: no usable object mask
            relative = f"{name}/{path.stem}.jpg"
            (args.output / "images" / name).mkdir(exist_ok=True)
            Image.fromarray(pixels).save(args.output / "images" / relative, quality=args.quality)
            title = clean_title(path.stem)
            captions.append({"image": relative, "text": _CAPTIONS[int(rng.integers(len(_CAPTIONS)))].format(title=title)})
            masks[relative] = base64.b64encode(np.packbits(mask.reshape(-1)).tobytes()).decode("ascii")
            sources.append({
                "image": relative,
                "origin": f"openclipart-png: {path.relative_to(args.openclipart).as_posix()}",
                "origin_sha256": digest,
                "licence": "public domain",
            })
            (test if kept % args.test_every == args.test_every - 1 else train).append(relative)
            kept += 1
    write_lines = lambda path, lines: path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")  # noqa: E731
    write_lines(args.output / "captions.jsonl", [json.dumps(c) for c in captions])
    write_lines(args.output / "sources.jsonl", [json.dumps(s) for s in sources])
    write_lines(args.output / "train.txt", train)
    write_lines(args.output / "test.txt", test)
    (args.output / "object_masks.json").write_text(json.dumps(masks, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    per_class = {c.name: sum(1 for s in sources if s["image"].startswith(c.name + "/")) for c in HELD_OUT}
    per_class = {name: count for name, count in per_class.items() if count}
    (args.output / "SOURCES.md").write_text(
        "# Embedded real-image benchmark: sources and licence\n\n"
        f"{len(sources)} images of {len(per_class)} categories ({len(train)} train, {len(test)} test): "
        + ", ".join(f"{k} {v}" for k, v in per_class.items()) + ".\n\n"
        f"All pixels come from Debian's `openclipart-png` ({SOURCES['openclipart']['licence']}): the object "
        "(its source file is listed in `sources.jsonl`) composited at 64 px over a background and clutter "
        "drawn from openclipart images of *other* categories. Captions are the clip art's titles (cleaned "
        "file names). The benchmark is public domain as well.\n\n"
        "Built by `benchmarks/build_clipart_benchmark.py` (see `make real-weights`).\n",
        encoding="utf-8",
    )
    summary = {"images": len(sources), "train": len(train), "test": len(test), "per_class": per_class,
               "bytes": sum(p.stat().st_size for p in args.output.rglob("*") if p.is_file())}
    print(json.dumps(summary))
    return summary


def main(argv: Sequence[str] | None = None) -> dict:
    return build(parse_args(argv))


if __name__ == "__main__":
    main()
