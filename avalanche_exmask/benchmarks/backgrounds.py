"""Photographic backgrounds for the embedded benchmarks: random crops of a few shipped photographs.

The package ships seven photographs (``benchmarks/resources/photos``, about 200 KB in all; each
file's origin, author and licence in its ``SOURCES.md`` and in :data:`PHOTO_SOURCES`): four colour
photographs and three greyscale textures, all public domain or CC0, from the sample images bundled
in the scikit-image wheel. :func:`photo_backgrounds` draws random square crops of them, at a random
scale and place, mirrored half the time, resized to the benchmark's resolution: a background that
costs JPEG as many bytes as a photograph's, unlike the smooth patterns and gradients the generators
draw by default. Everything is drawn from the generator passed in, so a benchmark stays a function
of its seed.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

__all__ = ["BackgroundKind", "PHOTO_ROOT", "PHOTO_SOURCES", "load_photos", "photo_backgrounds"]

#: What a generator draws behind its objects: its own ``"default"`` (patterns, clip art) or ``"photo"``.
BackgroundKind = Literal["default", "photo"]

#: The folder of the shipped photographs.
PHOTO_ROOT = Path(__file__).parent / "resources" / "photos"

_SKIMAGE = "scikit-image 0.26.0 wheel, skimage/data/"

#: ``{name: source}`` of every shipped photograph ``<name>.jpg``: the scikit-image file it was made
#: from, what it shows (the caption's words for a background), its author, origin and licence.
PHOTO_SOURCES: dict[str, dict[str, str]] = {
    "astronaut": {
        "file": "astronaut.png", "shows": "an astronaut", "author": "NASA",
        "origin": _SKIMAGE + "astronaut.png (NASA Great Images database, https://flic.kr/p/r9qvLn)",
        "licence": "public domain (no known copyright restrictions)",
    },
    "coffee": {
        "file": "coffee.png", "shows": "a coffee cup", "author": "Rachel Michetti",
        "origin": _SKIMAGE + "coffee.png", "licence": "CC0 1.0 (by the photographer)",
    },
    "chelsea": {
        "file": "chelsea.png", "shows": "a cat", "author": "Stefan van der Walt",
        "origin": _SKIMAGE + "chelsea.png", "licence": "CC0 1.0 (by the photographer)",
    },
    "rocket": {
        "file": "rocket.jpg", "shows": "a rocket", "author": "SpaceX",
        "origin": _SKIMAGE + "rocket.jpg (SpaceX Photos on Flickr, photo 16511594820)",
        "licence": "public domain (released by SpaceX)",
    },
    "brick": {
        "file": "brick.png", "shows": "a brick wall", "author": "CC0Textures (texture Bricks25)",
        "origin": _SKIMAGE + "brick.png (CC0Textures Bricks25, perspective-corrected, greyscale)",
        "licence": "CC0 1.0",
    },
    "grass": {
        "file": "grass.png", "shows": "grass", "author": "linolafett (DeviantArt, Grass 01)",
        "origin": _SKIMAGE + "grass.png (DeviantArt linolafett/art/Grass-01-434853879, cropped, greyscale)",
        "licence": "CC0 1.0",
    },
    "gravel": {
        "file": "gravel.png", "shows": "gravel", "author": "CC0Textures (texture Gravel04)",
        "origin": _SKIMAGE + "gravel.png (CC0Textures Gravel04, rescaled, cropped, greyscale)",
        "licence": "CC0 1.0",
    },
}


@functools.lru_cache(maxsize=4)
def load_photos(root: Path = PHOTO_ROOT) -> tuple[np.ndarray, ...]:
    """The photographs ``<name>.jpg`` of :data:`PHOTO_SOURCES` under ``root``, in that order, each
    ``uint8 [H, W, 3]`` (read-only; decoded once per ``root``).

    :raises FileNotFoundError: naming the first missing file.
    """
    photos = []
    for name in PHOTO_SOURCES:
        path = Path(root) / f"{name}.jpg"
        if not path.is_file():
            raise FileNotFoundError(f"photographic background not found: {path}")
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        array.setflags(write=False)
        photos.append(array)
    return tuple(photos)


def photo_backgrounds(
    rng: np.random.Generator,
    n: int,
    size: int,
    *,
    scale: tuple[float, float] = (0.4, 1.0),
    root: Path = PHOTO_ROOT,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random square crops of the shipped photographs, resized to ``size x size``.

    Each crop picks a photograph uniformly, a side of ``scale`` (uniform) times the photograph's
    shorter side, a uniform place inside it and a mirror image half the time; it is resized with a
    bilinear filter (antialiased when shrinking).

    :param rng: the only source of randomness (four draws per crop, in a fixed order).
    :param n: number of crops.
    :param size: output side ``S``, pixels.
    :param scale: range of the crop's side as a fraction of the photograph's shorter side.
    :return: ``uint8 [n, 3, S, S]`` backgrounds and ``int64 [n]`` the index of each one's
        photograph in :data:`PHOTO_SOURCES`.
    :raises ValueError: for ``size < 1`` or a ``scale`` outside ``(0, 1]``.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1; got {size}")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1; got {scale}")
    photos = load_photos(Path(root))
    which = rng.integers(len(photos), size=n)
    fraction = rng.uniform(scale[0], scale[1], size=n)
    place = rng.random(size=(n, 2))
    mirror = rng.random(size=n) < 0.5
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for i in range(n):
        photo = photos[which[i]]
        height, width = photo.shape[:2]
        side = max(1, int(round(fraction[i] * min(height, width))))
        top, left = int(place[i, 0] * (height - side + 1)), int(place[i, 1] * (width - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size), Image.Resampling.BILINEAR)
        array = np.asarray(crop)
        out[i] = (array[:, ::-1] if mirror[i] else array).transpose(2, 0, 1)
    return out, which.astype(np.int64)
