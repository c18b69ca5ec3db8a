"""Rebuild the shipped photographic backgrounds (``avalanche_exmask/benchmarks/resources/photos``).

Maintainer step, not needed by users or tests. The photographs are the public-domain and CC0 sample
images bundled in the scikit-image wheel (``skimage/data``, no download at run time); this script
reads them from that folder (an installed scikit-image, or an unpacked wheel), resizes each so its
shorter side is ``--short-side`` pixels (Lanczos) and writes it as a baseline JPEG of quality
``--quality`` with no metadata. The output is deterministic for the same Pillow version::

    pip download --no-deps -d /tmp/skw scikit-image==0.26.0
    unzip -q /tmp/skw/scikit_image-0.26.0-*.whl 'skimage/data/*' -d /tmp/skw/x
    python benchmarks/build_photo_backgrounds.py --skimage-data /tmp/skw/x/skimage/data

``SOURCES.md`` beside the images records each file's origin, author and licence
(:data:`avalanche_exmask.benchmarks.backgrounds.PHOTO_SOURCES`); this script checks that every file it
writes is listed there.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from avalanche_exmask.benchmarks.backgrounds import PHOTO_ROOT, PHOTO_SOURCES


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skimage-data", type=Path, required=True, help="the skimage/data folder of scikit-image 0.26")
    parser.add_argument("--short-side", type=int, default=256, help="shorter side of the written images, pixels")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the written images")
    parser.add_argument("--out", type=Path, default=PHOTO_ROOT)
    args = parser.parse_args(argv)
    if not args.skimage_data.is_dir():
        parser.error(f"--skimage-data: {args.skimage_data} is not a folder")
    return args


def main(argv: Sequence[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in PHOTO_SOURCES.items():
        path = args.skimage_data / source["file"]
        if not path.is_file():
            raise SystemExit(f"{path}: not found (scikit-image 0.26's bundled {source['file']})")
        image = Image.open(path).convert("RGB")
        scale = args.short_side / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        target = args.out / f"{name}.jpg"
        image.save(target, format="JPEG", quality=args.quality, optimize=True)
        written.append(target)
        print(f"{target.name}: {image.width} x {image.height}, {target.stat().st_size} bytes")
    return written


if __name__ == "__main__":
    main()
