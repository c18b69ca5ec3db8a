"""Real image+text material for pretraining ``exmask-tiny``: clip art and emoji with alpha masks.

Sources (installed by the maintainer, never by users or tests; see ``make real-weights``):

* Debian ``openclipart-png`` (``/usr/share/openclipart/png``): public-domain clip-art PNGs with
  alpha, in category folders; the file name is the title (``animals/bugs/flying_wasp_01.png``).
* npm ``emoji-datasource`` (names, short names, categories and subcategories of every emoji) with
  the image sets ``emoji-datasource-twitter`` (Twemoji graphics, CC BY 4.0) and
  ``emoji-datasource-google`` (Noto Emoji, Apache 2.0), 64 px PNGs with alpha. ``openmoji``
  (CC BY-SA 4.0) is not used: its share-alike terms would follow the weights.

Every image is decoded once, cropped to its alpha bounding box and fitted into a ``tile x tile``
RGBA tile (``64 x 64`` by default, the model's input resolution; :func:`load_material`, cached as
``.npz``). Fully opaque images have no object mask and
become *backgrounds*. A training sample is then composited (:func:`composite`): a background
(an opaque clip art crop or a colour gradient with noise), clutter (smaller, other objects of the
pool pasted behind), and the captioned object on top; its own alpha gives the ground-truth object
pixels and patches, which the attention prior of the pretraining supervises.

Held-out categories (:data:`avalanche_exmask.benchmarks.clipart.HELD_OUT`) never enter the
pretraining pool: their openclipart folders (with subfolders), the emoji subcategories of the same
concepts, any image whose bytes equal a held-out image's, and any item whose title or name holds one
of the held-out concepts' keywords are excluded (:func:`is_held_out`).
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from avalanche_exmask.benchmarks.clipart import HELD_OUT, HeldOutCategory

__all__ = [
    "MAINTAINER_DIR",
    "Item",
    "Material",
    "SOURCES",
    "clean_title",
    "openclipart_items",
    "emoji_items",
    "is_held_out",
    "load_material",
    "pretraining_material",
    "composite",
    "patch_mask",
    "caption",
]

TILE = 64
#: Where ``make real-weights`` installs the npm packages and caches the decoded material (outside the repository).
MAINTAINER_DIR = Path.home() / ".cache" / "avalanche-exmask-real"
ALPHA_THRESHOLD = 128  # alpha >= this (of 255) counts as an object pixel
MAX_PIXELS = 16_000_000  # larger source images are skipped (a few posters of 100+ megapixels)

#: Where each image set comes from and under which licence (recorded beside the weights).
SOURCES = {
    "openclipart": {
        "package": "Debian openclipart-png",
        "licence": "public domain (Creative Commons Public Domain Dedication; /usr/share/doc/openclipart-png/copyright)",
    },
    "twemoji": {
        "package": "npm emoji-datasource-twitter",
        "licence": "CC BY 4.0 (Twemoji graphics, (c) Twitter, Inc. and other contributors; see the package README)",
    },
    "noto": {
        "package": "npm emoji-datasource-google",
        "licence": "Apache License 2.0 (Noto Emoji, (c) Google; see the package README)",
    },
    "emoji-names": {
        "package": "npm emoji-datasource",
        "licence": "MIT (emoji-datasource, (c) 2013 Cal Henderson; names and categories)",
    },
}


@dataclass(frozen=True)
class Item:
    """One image with its texts (nothing decoded yet).

    :ivar path: the PNG file.
    :ivar source: a key of :data:`SOURCES`.
    :ivar title: the object's name (cleaned file name, or the emoji's name).
    :ivar context: its category words (folder path, or emoji category and subcategory).
    :ivar group: the sampling group (leaf folder or emoji subcategory), for balancing.
    """

    path: Path
    source: str
    title: str
    context: str
    group: str


_AUTHOR_TAIL = re.compile(r"(\s+\d+|\s+[a-z]?\d+[a-z]?)+$")


def clean_title(stem: str) -> str:
    """``"apple_bitten_dan_gerhard_01"`` -> ``"apple bitten dan gerhard"``: separators to spaces,
    trailing numbers dropped, lower case."""
    text = re.sub(r"[_\-\.]+", " ", stem).strip().lower()
    text = _AUTHOR_TAIL.sub("", " " + text).strip()
    text = re.sub(r"\s+", " ", text)
    return text or stem.lower()


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def is_held_out(item: Item, held_out: Sequence[HeldOutCategory] = HELD_OUT) -> bool:
    """Whether ``item`` belongs to (or names) a held-out category."""
    words = _words(item.title)
    for category in held_out:
        if item.source == "openclipart":
            folder = item.context.replace(" / ", "/")
            if folder == category.folder or folder.startswith(category.folder + "/"):
                return True
        elif item.group in category.emoji_subcategories:
            return True
        if words & set(category.keywords):
            return True
    return False


def openclipart_items(root: Path) -> list[Item]:
    """Every PNG under ``root`` (the ``png`` folder of openclipart-png), titled by its file name."""
    items = []
    for path in sorted(root.rglob("*.png")):
        folder = path.parent.relative_to(root).as_posix()
        items.append(
            Item(
                path=path,
                source="openclipart",
                title=clean_title(path.stem),
                context=folder.replace("/", " / "),
                group=folder,
            )
        )
    return items


def emoji_items(node_modules: Path, sets: Sequence[str] = ("twitter", "google")) -> list[Item]:
    """Every emoji of ``emoji-datasource``'s ``emoji.json`` with an image in each of ``sets``."""
    catalogue = json.loads((node_modules / "emoji-datasource" / "emoji.json").read_text(encoding="utf-8"))
    source_of = {"twitter": "twemoji", "google": "noto"}
    items = []
    for name in sets:
        folder = node_modules / f"emoji-datasource-{name}" / "img" / name / "64"
        for entry in catalogue:
            path = folder / entry["image"]
            if not entry.get(f"has_img_{name}") or not path.is_file() or not entry.get("name"):
                continue
            short = ", ".join(s.replace("_", " ").replace("-", " ") for s in entry.get("short_names") or [])
            items.append(
                Item(
                    path=path,
                    source=source_of[name],
                    title=entry["name"].lower(),
                    context=f"{entry['category'].lower()}, {entry['subcategory'].replace('-', ' ')}; {short}",
                    group=entry["subcategory"],
                )
            )
    return items


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_rgba(path: Path, tile: int = TILE) -> Image.Image | None:
    """The image at ``path`` as RGBA, its longer side at most ``8 * tile`` pixels; ``None`` for a
    source over :data:`MAX_PIXELS` (PIL's decompression-bomb check)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's notes on palette transparency and large images
        try:
            with Image.open(path) as opened:
                if opened.width * opened.height > MAX_PIXELS:
                    return None
                image = opened.convert("RGBA")
        except Image.DecompressionBombError:
            return None
    image.thumbnail((8 * tile, 8 * tile), Image.LANCZOS)
    return image


def object_extent(tile: np.ndarray) -> tuple[int, int]:
    """Width and height (pixels) of the object of a :func:`fit_tile` tile, from its alpha."""
    alpha = tile[..., 3] > 0
    return int(alpha.any(0).nonzero()[0].max()) + 1, int(alpha.any(1).nonzero()[0].max()) + 1


def fit_tile(image: Image.Image, size: int = TILE) -> np.ndarray | None:
    """Crop an RGBA image to its alpha bounding box and fit it, aspect kept, into the top-left of a
    transparent ``size x size`` tile. Returns ``uint8 [size, size, 4]``, or ``None`` if the image
    has no transparent pixel (no object mask) or no opaque one."""
    rgba = image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"))
    if alpha.min() >= ALPHA_THRESHOLD or alpha.max() < ALPHA_THRESHOLD:
        return None
    box = Image.fromarray((alpha >= 16).astype(np.uint8) * 255).getbbox()
    rgba = rgba.crop(box)
    scale = size / max(rgba.size)
    rgba = rgba.resize((max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale))), Image.LANCZOS)
    tile = np.zeros((size, size, 4), dtype=np.uint8)
    tile[: rgba.height, : rgba.width] = np.asarray(rgba)
    return tile


def background_tile(image: Image.Image, size: int = TILE) -> np.ndarray:
    """A centre crop of an opaque image resized to ``uint8 [size, size, 3]``."""
    rgb = image.convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    return np.asarray(rgb.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR))


@dataclass
class Material:
    """Decoded pretraining material.

    :ivar objects: ``uint8 [M, S, S, 4]`` RGBA object tiles (object at the top left; ``S`` is the
        tile size, which is also the size of the images :func:`composite` makes).
    :ivar extents: ``int [M, 2]`` width and height of each object inside its tile, pixels.
    :ivar items: the ``M`` items.
    :ivar backgrounds: ``uint8 [K, S, S, 3]`` opaque images.
    """

    objects: np.ndarray
    extents: np.ndarray
    items: list[Item]
    backgrounds: np.ndarray

    def groups(self) -> list[np.ndarray]:
        """The object indices of each group (openclipart folder or emoji subcategory), groups sorted by name."""
        members: dict[str, list[int]] = {}
        for index, item in enumerate(self.items):
            members.setdefault(item.group, []).append(index)
        return [np.array(members[name]) for name in sorted(members)]

    def counts(self) -> dict[str, int]:
        """Objects per source."""
        out: dict[str, int] = {}
        for item in self.items:
            out[item.source] = out.get(item.source, 0) + 1
        return out


def load_material(
    items: Iterable[Item],
    *,
    exclude_hashes: frozenset[str] = frozenset(),
    cache: Path | None = None,
    tile: int = TILE,
) -> Material:
    """Decode ``items`` into tiles (or load them from ``cache``, an ``.npz`` written on first use).

    :param exclude_hashes: SHA-256 of image files left out (the held-out images).
    :param tile: side of the tiles, pixels.
    :raises ValueError: naming ``cache`` if it holds tiles of another size.
    """
    items = list(items)
    if cache is not None and cache.is_file():
        stored = np.load(cache, allow_pickle=False)
        if stored["objects"].shape[1] != tile:
            raise ValueError(f"{cache}: holds {stored['objects'].shape[1]} px tiles, not {tile} px (use another --cache)")
        meta = json.loads(str(stored["items"]))
        kept = [Item(Path(m[0]), *m[1:]) for m in meta]
        return Material(stored["objects"], stored["extents"], kept, stored["backgrounds"])
    objects, extents, kept, backgrounds = [], [], [], []
    for item in items:
        if exclude_hashes and sha256(item.path) in exclude_hashes:
            continue
        image = read_rgba(item.path, tile)
        if image is None:
            continue
        fitted = fit_tile(image, tile)
        if fitted is None:
            if np.asarray(image.getchannel("A")).min() >= ALPHA_THRESHOLD:
                backgrounds.append(background_tile(image, tile))
            continue
        extents.append(object_extent(fitted))
        objects.append(fitted)
        kept.append(item)
    material = Material(
        np.stack(objects), np.array(extents, dtype=np.int64), kept,
        np.stack(backgrounds) if backgrounds else np.zeros((0, tile, tile, 3), np.uint8),
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps([[str(i.path), i.source, i.title, i.context, i.group] for i in kept])
        np.savez(cache, objects=material.objects, extents=material.extents, backgrounds=material.backgrounds,
                 items=np.array(meta))
    return material


def pretraining_material(
    openclipart: Path, emoji: Path, *, cache: Path | None = None, tile: int = TILE
) -> tuple[Material, dict]:
    """The pretraining pool: every openclipart and emoji item that is not held out, decoded.

    :param openclipart: the ``png`` folder of openclipart-png (may be missing if ``cache`` exists).
    :param emoji: a ``node_modules`` with emoji-datasource, -twitter and -google (likewise).
    :param tile: side of the decoded tiles and of the composited images, pixels.
    :return: the material and a summary (counts of images found, excluded and kept).
    """
    clipart = openclipart_items(openclipart) if openclipart.exists() else []
    emojis = emoji_items(emoji) if (emoji / "emoji-datasource").exists() else []
    pool = [i for i in clipart + emojis if not is_held_out(i)]
    use_cache = cache is not None and cache.is_file()
    held_images = [i for i in clipart if any(i.group == c.folder for c in HELD_OUT)]
    hashes = frozenset() if use_cache else frozenset(sha256(i.path) for i in held_images)
    material = load_material(pool, exclude_hashes=hashes, cache=cache, tile=tile)
    summary = {
        "openclipart_images_found": len(clipart),
        "emoji_images_found": len(emojis),
        "held_out_items_excluded": len(clipart) + len(emojis) - len(pool),
        "objects": len(material.items),
        "objects_by_source": material.counts(),
        "backgrounds": len(material.backgrounds),
    }
    return material, summary


def _paste(canvas: np.ndarray, tile: np.ndarray, extent: Sequence[int], scale: float, rng: np.random.Generator,
           flip: bool) -> np.ndarray:
    """Alpha-composite the object of ``tile`` (``extent`` = width, height), resized so its longer
    side is ``scale * S``, at a random position fully inside the float ``[S, S, 3]`` canvas.
    Returns the pasted alpha ``float [S, S]`` in ``[0, 1]``."""
    size = canvas.shape[0]
    width, height = int(extent[0]), int(extent[1])
    factor = scale * size / max(width, height)
    new_w, new_h = max(1, min(size, round(width * factor))), max(1, min(size, round(height * factor)))
    piece = Image.fromarray(tile[:height, :width]).resize((new_w, new_h), Image.BILINEAR)
    rgba = np.asarray(piece, dtype=np.float32)
    if flip:
        rgba = rgba[:, ::-1]
    x, y = int(rng.integers(0, size - new_w + 1)), int(rng.integers(0, size - new_h + 1))
    alpha = rgba[..., 3:] / 255.0
    region = canvas[y : y + new_h, x : x + new_w]
    canvas[y : y + new_h, x : x + new_w] = alpha * rgba[..., :3] + (1.0 - alpha) * region
    full = np.zeros((size, size), dtype=np.float32)
    full[y : y + new_h, x : x + new_w] = alpha[..., 0]
    return full


def _background(material: Material, rng: np.random.Generator, size: int) -> np.ndarray:
    """``float [S, S, 3]``: a flipped opaque clip art (half the time, if any) or a two-colour
    gradient with pixel noise."""
    if len(material.backgrounds) and rng.random() < 0.5:
        image = material.backgrounds[rng.integers(len(material.backgrounds))].astype(np.float32)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        return image.copy()
    first, second = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, np.pi)
    ramp = (np.cos(angle) * np.arange(size)[None, :] + np.sin(angle) * np.arange(size)[:, None]) / size
    ramp = (ramp - ramp.min()) / max(1e-6, float(np.ptp(ramp)))
    image = first + ramp[..., None] * (second - first)
    return np.clip(image + rng.normal(0, rng.uniform(0, 20), size=(size, size, 3)), 0, 255).astype(np.float32)


def composite(
    material: Material,
    tile: np.ndarray,
    extent: Sequence[int],
    rng: np.random.Generator,
    *,
    scale: tuple[float, float] = (0.45, 0.9),
    clutter: tuple[int, int] = (0, 3),
    clutter_scale: tuple[float, float] = (0.2, 0.45),
    skip: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One image: a background and clutter drawn from ``material``, then the object on top.

    :param tile: ``uint8 [S, S, 4]`` the object's RGBA tile (object at the top left).
    :param extent: the object's width and height in the tile, pixels.
    :param scale: range of the object's longer side, as a fraction of ``S``.
    :param clutter: inclusive range of the number of other objects pasted behind.
    :param clutter_scale: range of their longer sides, as a fraction of ``S``.
    :param skip: an object of ``material`` not used as clutter (the object itself).
    :return: ``uint8 [S, S, 3]`` image and ``bool [S, S]`` object pixels (alpha >= 0.5).
    """
    size = material.objects.shape[1]
    canvas = _background(material, rng, size)
    for _ in range(int(rng.integers(clutter[0], clutter[1] + 1))):
        other = int(rng.integers(len(material.objects)))
        if other == skip:
            continue
        _paste(canvas, material.objects[other], material.extents[other], rng.uniform(*clutter_scale), rng,
               bool(rng.random() < 0.5))
    alpha = _paste(canvas, tile, extent, rng.uniform(*scale), rng, bool(rng.random() < 0.5))
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), alpha >= ALPHA_THRESHOLD / 255.0


def patch_mask(object_pixels: np.ndarray, patch_size: int) -> np.ndarray:
    """``bool [..., S, S]`` -> ``bool [..., N]``: patches (row-major) holding an object pixel, as
    the synthetic benchmark defines them."""
    *lead, size, _ = object_pixels.shape
    grid = size // patch_size
    blocks = object_pixels.reshape(*lead, grid, patch_size, grid, patch_size)
    return blocks.any(axis=(-3, -1)).reshape(*lead, grid * grid)


# Every caption names the item's context (folder or emoji category): words shared by many items, without
# which the tiny model finds no signal in a few hundred steps (contrastive loss stays at ln(batch size)).
_TEMPLATES = {
    "openclipart": ("{title}, {context}", "a clip art of {title}, {context}", "{context}: {title}"),
    "emoji": ("{title}, {context}", "an emoji of {title}, {context}", "{context}: {title}"),
}


def caption(item: Item, rng: np.random.Generator) -> str:
    """A caption of ``item`` from one of a few templates over its title and context."""
    templates = _TEMPLATES["openclipart" if item.source == "openclipart" else "emoji"]
    return templates[int(rng.integers(len(templates)))].format(title=item.title, context=item.context)
