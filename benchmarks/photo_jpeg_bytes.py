"""Bytes of a photo stored plain, as JPEG (MRDC), masked, and masked with JPEG patches, by resolution.

The embedded benchmark's renders are flat-coloured, so one may ask whether JPEG's lead over
masking in exemplar count is an artefact of them. This measures real photos (by default the three
that matplotlib and scikit-learn install: ``grace_hopper.jpg``, ``china.jpg``, ``flower.jpg``),
resized to each ``--sizes`` with patch size ``--patch`` (default: 8 px at 64 px, 16 px otherwise).
With no model at hand, the mask keeps the ``--kept`` fraction of patches nearest the centre (a
stand-in for an object-centred [CLS] attention). Records come from the package's codecs (token ids
left out: an empty text), so the bytes are what a buffer would count.

Usage::

    python benchmarks/photo_jpeg_bytes.py
    python benchmarks/photo_jpeg_bytes.py --photos my.jpg --sizes 224 384 --kept 0.35
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from avalanche_exmask.data.sample import make_sample
from avalanche_exmask.masking.image_mask import ImageMaskRule
from avalanche_exmask.models.outputs import MaskingScores
from avalanche_exmask.storage.codecs import JpegCodec, MaskedCodec


def default_photos() -> list[Path]:
    """The sample photos that matplotlib and scikit-learn install."""
    import matplotlib
    import sklearn

    return [
        Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
        Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
        Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg",
    ]


def centre_scores(grid: int, context_length: int) -> MaskingScores:
    """Scores whose patch attention falls with the distance to the image centre (``[grid^2]``); the
    other fields are zeros (the masked codec without a text rule reads only the patch attention)."""
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    distance = ((rows - (grid - 1) / 2) ** 2 + (cols - (grid - 1) / 2) ** 2).flatten().float()
    attention = torch.softmax(-distance, dim=0)
    return MaskingScores(
        embedding=torch.zeros(1), patch_attention=attention, token_attention=torch.zeros(context_length),
        patch_features=torch.zeros(grid * grid, 1), token_features=torch.zeros(context_length, 1), batch_size=[],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="*", type=Path, default=None)
    parser.add_argument("--sizes", nargs="*", type=int, default=[64, 224])
    parser.add_argument("--patch", type=int, default=None, help="patch size in px (default: 8 at 64 px, else 16)")
    parser.add_argument("--kept", nargs="*", type=float, default=[0.35, 0.1])
    parser.add_argument("--quality", type=int, default=50)
    args = parser.parse_args()
    ids = torch.zeros(8, dtype=torch.long)
    print("photo, size: bytes of plain | JPEG | masked (kept fraction) | masked + JPEG patches; JPEG / masked+JPEG")
    for photo in args.photos or default_photos():
        if not photo.is_file():
            raise SystemExit(f"error: {photo} does not exist")
        with Image.open(photo) as opened:
            original = opened.convert("RGB")
        for size in args.sizes:
            patch = args.patch or (8 if size <= 64 else 16)
            pixels = torch.from_numpy(np.asarray(original.resize((size, size), Image.BICUBIC)).transpose(2, 0, 1).copy())
            sample = make_sample(pixels, ids)
            scores = centre_scores(size // patch, len(ids))
            jpeg = JpegCodec(quality=args.quality).encode(sample, scores, 0).nbytes
            for kept in args.kept:
                rule = ImageMaskRule(kind="ratio", ratio=kept)
                masked = MaskedCodec(image_rule=rule, patch_size=patch).encode(sample, scores, 0).nbytes
                masked_jpeg = MaskedCodec(image_rule=rule, patch_size=patch, patch_jpeg_quality=args.quality).encode(
                    sample, scores, 0
                ).nbytes
                print(f"{photo.name}, {size} px: {3 * size * size} | {jpeg} | {masked} ({kept:g}) | {masked_jpeg}; "
                      f"{jpeg / masked_jpeg:.2f}x")


if __name__ == "__main__":
    main()
