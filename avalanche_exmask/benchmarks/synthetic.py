"""The embedded default benchmark: procedurally drawn objects in clutter, with captions.

Every class is one entry of a fixed catalogue of *shape x colour x texture* combinations
(``"red striped triangle"``). A sample shows one object of its class, at a random place and
scale, over a random textured background with smaller distractor shapes of other kinds behind
it. Its caption always describes the context (where the object is, the background, the
distractors) but names the object's attributes only with probability ``attribute_prob``, so
neither the image (small objects, colour jitter, noise) nor the text alone solves the task.

The catalogue is split once, by a fixed rule, into *benchmark* classes and *pretraining* classes
(:func:`benchmark_classes`, :func:`pretraining_classes`): the tiny CLIP model shipped with the
package was pretrained on the latter only, so the benchmark's classes are new combinations of
attributes it has seen.

With ``background="photo"`` the patterns give way to random crops of the shipped photographs
(:mod:`avalanche_exmask.benchmarks.backgrounds`), drawn from a generator of their own: the objects,
distractors, noise and caption templates of a seed are the same as with the patterns, only the
background (and the caption's words for it) change.

Everything is deterministic given the seed, drawn with private ``numpy.random.Generator``
objects (the global ``random`` / ``numpy`` / ``torch`` RNG states are never touched), and needs
no files but the shipped photographs (for ``background="photo"`` only). Each sample's ground-truth
object mask (pixels and patches of the model's patch grid) is kept beside the samples, not inside
:class:`~avalanche_exmask.data.sample.MultimodalSample`.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import open_clip
import torch
from avalanche.benchmarks.scenarios.generic_scenario import CLScenario
from torch.utils.data import Dataset

from avalanche_exmask.benchmarks.backgrounds import PHOTO_SOURCES, BackgroundKind, photo_backgrounds
from avalanche_exmask.benchmarks.common import build_class_incremental
from avalanche_exmask.bounds import Bounds
from avalanche_exmask.data.model_inputs import get_tokenizer, model_geometry
from avalanche_exmask.data.sample import MultimodalSample, make_sample

__all__ = [
    "SHAPES",
    "COLOURS",
    "TEXTURES",
    "SyntheticClass",
    "SYNTHETIC_CATALOGUE",
    "benchmark_classes",
    "pretraining_classes",
    "SyntheticSamples",
    "generate_synthetic",
    "SyntheticMultimodalDataset",
    "synthetic_multimodal",
]

#: Object shapes of the catalogue.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star", "ring", "semicircle")

#: Object colours of the catalogue: name -> nominal RGB (0..255).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 80, 215),
    "yellow": (225, 205, 40),
    "purple": (135, 60, 185),
    "orange": (235, 135, 30),
    "cyan": (40, 195, 205),
    "pink": (235, 120, 175),
}

#: Object textures of the catalogue (``solid`` has no pattern).
TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")

_BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "grey": (125, 125, 125),
    "beige": (200, 185, 150),
    "brown": (105, 75, 50),
    "navy": (35, 45, 85),
    "olive": (105, 110, 55),
    "white": (225, 225, 220),
    "black": (28, 28, 30),
    "teal": (45, 95, 95),
}
_BACKGROUND_PATTERNS: tuple[str, ...] = ("plain", "striped", "checkered", "tiled")
_POSITIONS: tuple[str, ...] = (
    "at the top left", "at the top", "at the top right",
    "on the left", "in the centre", "on the right",
    "at the bottom left", "at the bottom", "at the bottom right",
)
_GENERIC_SUBJECTS: tuple[str, ...] = ("an object", "a shape", "something", "a thing")
_NUMBER_WORDS: tuple[str, ...] = ("no", "one", "two", "three")

# Geometry, as fractions of the image side.
_OBJECT_RADIUS = (0.13, 0.28)
_DISTRACTOR_RADIUS = (0.06, 0.11)
_MAX_DISTRACTORS = 3
_MAX_ROTATION = np.pi / 9  # radians; kept small so that a square and a diamond stay different
_TEXTURE_PERIOD = 6.0  # pixels
_DARK_FACTOR = 0.35  # brightness of the dark half of a texture pattern
_PIXEL_NOISE = 7.0  # std of the Gaussian pixel noise, in 0..255 units
_TILES = 5  # tiles per side of the tiled background (not a divisor of the patch grid)
_CHUNK = 256  # images drawn at once (bounds memory; fixed so results do not depend on n)

# The fixed rule splitting the catalogue: a permutation under this seed, first part = benchmark.
_SPLIT_SEED = 20241212
_N_BENCHMARK_CLASSES = 64


@dataclass(frozen=True)
class SyntheticClass:
    """One class of the catalogue: an object ``shape`` of a ``colour`` and a ``texture``."""

    shape: str
    colour: str
    texture: str

    @property
    def name(self) -> str:
        """Human-readable class name, e.g. ``"red striped triangle"``."""
        return f"{self.colour} {self.texture} {self.shape}"


#: Every ``shape x colour x texture`` combination (256 classes), in a fixed order.
SYNTHETIC_CATALOGUE: tuple[SyntheticClass, ...] = tuple(
    SyntheticClass(shape, colour, texture)
    for shape, colour, texture in itertools.product(SHAPES, COLOURS, TEXTURES)
)


def _catalogue_split() -> tuple[tuple[SyntheticClass, ...], tuple[SyntheticClass, ...]]:
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(SYNTHETIC_CATALOGUE))
    classes = [SYNTHETIC_CATALOGUE[i] for i in order]
    return tuple(classes[:_N_BENCHMARK_CLASSES]), tuple(classes[_N_BENCHMARK_CLASSES:])


_BENCHMARK_CLASSES, _PRETRAINING_CLASSES = _catalogue_split()


def benchmark_classes() -> tuple[SyntheticClass, ...]:
    """The 64 catalogue classes the benchmark draws from (its first ``n_classes``), fixed order."""
    return _BENCHMARK_CLASSES


def pretraining_classes() -> tuple[SyntheticClass, ...]:
    """The 192 catalogue classes used to pretrain the tiny CLIP model; disjoint from
    :func:`benchmark_classes`, but every shape, colour and texture occurs in both."""
    return _PRETRAINING_CLASSES


@dataclass
class SyntheticSamples:
    """A batch of generated samples (``n`` samples, side ``S`` pixels, ``N`` patches).

    :ivar images: ``uint8`` ``[n, 3, S, S]``.
    :ivar texts: ``n`` captions.
    :ivar labels: ``int64`` ``[n]``, indices into the ``classes`` the samples were generated for.
    :ivar object_masks: ``bool`` ``[n, S, S]``, the object's visible pixels.
    :ivar object_patch_masks: ``bool`` ``[n, N]``, patches (row-major over the ``(S/P) x (S/P)``
        grid) holding at least one object pixel.
    :ivar names_attributes: ``bool`` ``[n]``, whether the caption names the object's attributes.
    """

    images: np.ndarray
    texts: list[str]
    labels: np.ndarray
    object_masks: np.ndarray
    object_patch_masks: np.ndarray
    names_attributes: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class _Layout:
    """Per-sample random parameters (arrays of length ``n``; distractor arrays ``[n, 3]``)."""

    centre: np.ndarray  # float [n, 2] (x, y) pixels
    radius: np.ndarray  # float [n] pixels
    angle: np.ndarray  # float [n] radians
    colour: np.ndarray  # float [n, 3] jittered RGB
    background: np.ndarray  # int [n, 2] (pattern, colour) indices
    background_colours: np.ndarray  # float [n, 2, 3]
    background_scale: np.ndarray  # float [n] pattern period, pixels
    background_angle: np.ndarray  # float [n] radians
    tiles: np.ndarray  # float [n, 5, 5] colour mix of each tile of the tiled pattern
    n_distractors: np.ndarray  # int [n]
    distractor_shape: np.ndarray  # int [n, 3]
    distractor_colour: np.ndarray  # int [n, 3]
    distractor_texture: np.ndarray  # int [n, 3]
    distractor_centre: np.ndarray  # float [n, 3, 2]
    distractor_radius: np.ndarray  # float [n, 3]
    distractor_angle: np.ndarray  # float [n, 3]


def generate_synthetic(
    *,
    n_per_class: int,
    classes: Sequence[SyntheticClass],
    seed: int,
    image_size: int = 64,
    patch_size: int = 8,
    attribute_prob: float = 0.5,
    background: BackgroundKind = "default",
) -> SyntheticSamples:
    """Draw ``n_per_class`` samples of each class (class-major order), deterministically.

    :param n_per_class: samples per class.
    :param classes: the classes; labels are indices into this sequence.
    :param seed: the seed of a private ``numpy.random.Generator``.
    :param image_size: image side ``S`` in pixels.
    :param patch_size: patch side ``P`` in pixels (``S`` must be a multiple); gives the patch grid
        of ``object_patch_masks``.
    :param attribute_prob: probability that a caption names the object's colour, texture and
        shape; otherwise it calls it "an object" (or similar). Context is always described.
    :param background: ``"default"``, two-colour patterns (plain, striped, checkered, tiled); or
        ``"photo"``, crops of the shipped photographs (:func:`~avalanche_exmask.benchmarks.backgrounds.photo_backgrounds`,
        drawn from a generator seeded by ``(seed, 1)``), the caption naming what the photograph shows.
    :return: the samples with their captions and ground-truth object masks.
    """
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    if not 0.0 <= attribute_prob <= 1.0:
        raise ValueError(f"attribute_prob must be in [0, 1]; got {attribute_prob}")
    if background not in ("default", "photo"):
        raise ValueError(f"background must be 'default' or 'photo'; got {background!r}")
    rng = np.random.default_rng(seed)
    photo_rng = np.random.default_rng(np.random.SeedSequence([seed, 1])) if background == "photo" else None
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), n_per_class)
    shape_ids = np.array([SHAPES.index(c.shape) for c in classes], dtype=np.int64)[labels]
    colour_ids = np.array([list(COLOURS).index(c.colour) for c in classes], dtype=np.int64)[labels]
    texture_ids = np.array([TEXTURES.index(c.texture) for c in classes], dtype=np.int64)[labels]
    layout = _draw_layout(rng, shape_ids, colour_ids, image_size)
    names_attributes = rng.random(len(labels)) < attribute_prob
    n, size = len(labels), image_size
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    object_masks = np.empty((n, size, size), dtype=bool)
    photos = np.full(n, -1, dtype=np.int64)
    for start in range(0, n, _CHUNK):
        part = slice(start, min(start + _CHUNK, n))
        backdrop = None
        if photo_rng is not None:
            backdrop, photos[part] = photo_backgrounds(photo_rng, part.stop - part.start, size)
        images[part], object_masks[part] = _render(
            rng, layout, part, shape_ids[part], texture_ids[part], size, backdrop
        )
    grid = size // patch_size
    patch_masks = object_masks.reshape(n, grid, patch_size, grid, patch_size).any(axis=(2, 4)).reshape(n, -1)
    texts = _captions(rng, classes, labels, layout, names_attributes, size, photos)
    return SyntheticSamples(images, texts, labels, object_masks, patch_masks, names_attributes)


def _draw_layout(rng: np.random.Generator, shape_ids: np.ndarray, colour_ids: np.ndarray, size: int) -> _Layout:
    n = len(shape_ids)
    radius = rng.uniform(*_OBJECT_RADIUS, size=n) * size
    centre = rng.uniform(radius[:, None], size - radius[:, None], size=(n, 2))
    nominal = np.array(list(COLOURS.values()), dtype=np.float32)[colour_ids]
    colour = nominal * rng.uniform(0.8, 1.1, size=(n, 1)) + rng.uniform(-18, 18, size=(n, 3))
    background = np.stack(
        [rng.integers(len(_BACKGROUND_PATTERNS), size=n), rng.integers(len(_BACKGROUND_COLOURS), size=n)], axis=1
    )
    base = np.array(list(_BACKGROUND_COLOURS.values()), dtype=np.float32)
    first = base[background[:, 1]] + rng.uniform(-12, 12, size=(n, 3))
    second = 0.7 * first + 0.3 * base[rng.integers(len(base), size=n)] + rng.uniform(-25, 25, size=(n, 3))
    other_shapes = (shape_ids[:, None] + rng.integers(1, len(SHAPES), size=(n, _MAX_DISTRACTORS))) % len(SHAPES)
    distractor_radius = rng.uniform(*_DISTRACTOR_RADIUS, size=(n, _MAX_DISTRACTORS)) * size
    return _Layout(
        centre=centre,
        radius=radius,
        angle=rng.uniform(-_MAX_ROTATION, _MAX_ROTATION, size=n),
        colour=colour,
        background=background,
        background_colours=np.stack([first, second], axis=1),
        background_scale=rng.uniform(4.0, 12.0, size=n),
        background_angle=rng.uniform(0.0, np.pi, size=n),
        tiles=rng.random((n, _TILES, _TILES)),
        n_distractors=rng.integers(1, _MAX_DISTRACTORS + 1, size=n),
        distractor_shape=other_shapes,
        distractor_colour=rng.integers(len(COLOURS), size=(n, _MAX_DISTRACTORS)),
        distractor_texture=rng.integers(len(TEXTURES), size=(n, _MAX_DISTRACTORS)),
        distractor_centre=rng.uniform(0.0, size, size=(n, _MAX_DISTRACTORS, 2)),
        distractor_radius=distractor_radius,
        distractor_angle=rng.uniform(-_MAX_ROTATION, _MAX_ROTATION, size=(n, _MAX_DISTRACTORS)),
    )


def _object_frame(centre: np.ndarray, angle: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(u, v)`` in each object's rotated frame, float ``[m, S, S]``."""
    pixels = np.arange(size, dtype=np.float32) + 0.5
    dx = pixels[None, None, :] - centre[:, 0, None, None].astype(np.float32)
    dy = pixels[None, :, None] - centre[:, 1, None, None].astype(np.float32)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    return (dx * cos + dy * sin).astype(np.float32), (dy * cos - dx * sin).astype(np.float32)


def _shape_masks(shape_ids: np.ndarray, u: np.ndarray, v: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """``bool [m, S, S]``: pixels inside each shape (``u`` right, ``v`` down, ``radius`` in pixels)."""
    r = radius[:, None, None].astype(np.float32)
    rho = np.hypot(u, v)
    masks = np.zeros(u.shape, dtype=bool)
    for shape_id, shape in enumerate(SHAPES):
        sel = shape_ids == shape_id
        if not sel.any():
            continue
        uu, vv, rr, pp = u[sel], v[sel], r[sel], rho[sel]
        if shape == "circle":
            inside = pp <= rr
        elif shape == "square":
            inside = np.maximum(np.abs(uu), np.abs(vv)) <= 0.82 * rr
        elif shape == "triangle":  # pointing up; inradius 0.55 r
            normals = np.array([0.5, 7 / 6, 11 / 6]) * np.pi
            inside = np.all(
                [uu * np.cos(a) + vv * np.sin(a) <= 0.55 * rr for a in normals], axis=0
            )
        elif shape == "diamond":  # a tall rhombus
            inside = np.abs(uu) / 0.7 + np.abs(vv) <= rr
        elif shape == "cross":
            arm = 0.32 * rr
            inside = ((np.abs(uu) <= arm) & (np.abs(vv) <= rr)) | ((np.abs(vv) <= arm) & (np.abs(uu) <= rr))
        elif shape == "star":  # five rounded points
            inside = pp <= rr * (0.6 + 0.4 * np.cos(5 * np.arctan2(uu, -vv)))
        elif shape == "ring":
            inside = (pp <= rr) & (pp >= 0.55 * rr)
        else:  # semicircle, flat side down
            inside = (pp <= rr) & (vv <= 0.25 * rr)
        masks[sel] = inside
    return masks


def _dark_pattern(texture_ids: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``bool [m, S, S]``: the dark part of each texture, in the object's frame."""
    period = _TEXTURE_PERIOD
    stripes = np.floor(v / (period / 2)) % 2 == 0
    du, dv = (u % period) - period / 2, (v % period) - period / 2
    dots = du * du + dv * dv <= (0.3 * period) ** 2
    checks = (np.floor(u / (period / 2)) + np.floor(v / (period / 2))) % 2 == 0
    choice = texture_ids[:, None, None]
    return np.where(choice == 1, stripes, np.where(choice == 2, dots, np.where(choice == 3, checks, False)))


def _paint(canvas: np.ndarray, mask: np.ndarray, dark: np.ndarray, colour: np.ndarray) -> None:
    """Paint ``colour`` (``[m, 3]``) into ``canvas`` (``float [m, 3, S, S]``) where ``mask``; darker where ``dark``."""
    shade = np.where(dark, _DARK_FACTOR, 1.0).astype(np.float32)[:, None]  # [m, 1, S, S]
    painted = colour[:, :, None, None].astype(np.float32) * shade
    np.copyto(canvas, painted, where=mask[:, None])


def _render(
    rng: np.random.Generator,
    layout: _Layout,
    part: slice,
    shape_ids: np.ndarray,
    texture_ids: np.ndarray,
    size: int,
    backdrop: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the samples ``part``: background, distractors, then the object on top.

    :param backdrop: ``uint8 [m, 3, S, S]`` backgrounds to draw on instead of the layout's patterns.
    :return: images ``uint8 [m, 3, S, S]`` and object masks ``bool [m, S, S]``.
    """
    canvas = _background(layout, part, size) if backdrop is None else backdrop.astype(np.float32)
    m = canvas.shape[0]
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    for k in range(_MAX_DISTRACTORS):
        present = layout.n_distractors[part] > k
        u, v = _object_frame(layout.distractor_centre[part, k], layout.distractor_angle[part, k], size)
        mask = _shape_masks(layout.distractor_shape[part, k], u, v, layout.distractor_radius[part, k])
        mask &= present[:, None, None]
        dark = _dark_pattern(layout.distractor_texture[part, k], u, v)
        _paint(canvas, mask, dark, palette[layout.distractor_colour[part, k]])
    u, v = _object_frame(layout.centre[part], layout.angle[part], size)
    object_mask = _shape_masks(shape_ids, u, v, layout.radius[part])
    _paint(canvas, object_mask, _dark_pattern(texture_ids, u, v), layout.colour[part])
    canvas += rng.standard_normal(size=(m, 3, size, size), dtype=np.float32) * _PIXEL_NOISE
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), object_mask


def _background(layout: _Layout, part: slice, size: int) -> np.ndarray:
    """``float [m, 3, S, S]`` backgrounds: a two-colour pattern (plain, striped, checkered, tiled)."""
    pattern = layout.background[part, 0]
    m = len(pattern)
    pixels = np.arange(size, dtype=np.float32) + 0.5
    xs, ys = pixels[None, None, :], pixels[None, :, None]
    angle = layout.background_angle[part][:, None, None]
    scale = layout.background_scale[part][:, None, None]
    stripes = (np.floor((xs * np.cos(angle) + ys * np.sin(angle)) / scale) % 2).astype(np.float32)
    checks = ((np.floor(xs / scale) + np.floor(ys / scale)) % 2).astype(np.float32)
    tile_index = (pixels * _TILES / size).astype(np.int64)
    tiles = layout.tiles[part][:, tile_index][:, :, tile_index].astype(np.float32)
    mix = np.select(
        [pattern[:, None, None] == i for i in range(1, 4)], [stripes, checks, tiles], default=0.0
    ).astype(np.float32)
    mix = np.broadcast_to(mix, (m, size, size))[:, None]
    first, second = layout.background_colours[part, 0], layout.background_colours[part, 1]
    return (first[:, :, None, None] * (1 - mix) + second[:, :, None, None] * mix).astype(np.float32)


def _captions(
    rng: np.random.Generator,
    classes: Sequence[SyntheticClass],
    labels: np.ndarray,
    layout: _Layout,
    names_attributes: np.ndarray,
    size: int,
    photos: np.ndarray,
) -> list[str]:
    """One short caption per sample (at most 32 tokens with start and end tokens); ``photos[i]``
    is the index in :data:`PHOTO_SOURCES` of sample ``i``'s photographic background, -1 for a pattern."""
    n = len(labels)
    templates = rng.integers(3, size=n)
    generic = rng.integers(len(_GENERIC_SUBJECTS), size=n)
    cell = np.clip((layout.centre * 3 / size).astype(np.int64), 0, 2)
    colour_names, background_colour_names = list(COLOURS), list(_BACKGROUND_COLOURS)
    photo_names = [source["shows"] for source in PHOTO_SOURCES.values()]
    texts = []
    for i in range(n):
        label = int(labels[i])
        subject = _indefinite(classes[label].name) if names_attributes[i] else _GENERIC_SUBJECTS[generic[i]]
        position = _POSITIONS[3 * cell[i, 1] + cell[i, 0]]
        pattern, colour = layout.background[i]
        if photos[i] >= 0:
            background = f"a photo of {photo_names[photos[i]]}"
        else:
            background = f"a {_BACKGROUND_PATTERNS[pattern]} {background_colour_names[colour]} background"
        near = f"a small {colour_names[layout.distractor_colour[i, 0]]} {SHAPES[layout.distractor_shape[i, 0]]}"
        extra = int(layout.n_distractors[i]) - 1
        clutter = near + (f" and {_NUMBER_WORDS[extra]} more" if extra else "")
        if templates[i] == 0:
            text = f"{subject} {position} on {background} near {clutter}"
        elif templates[i] == 1:
            text = f"{position}, {subject} near {clutter} on {background}"
        else:
            text = f"{background} with {subject} {position} and {clutter}"
        texts.append(text)
    return texts


def _indefinite(noun_phrase: str) -> str:
    """``"an orange ring"``, ``"a red star"``."""
    return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase


class SyntheticMultimodalDataset(Dataset):
    """Generated samples as a dataset of ``(MultimodalSample, label)`` items.

    Images and token ids are held as tensors; the ground truth the samples do not carry is
    available as attributes, indexed like the dataset.

    :param samples: the output of :func:`generate_synthetic`.
    :param input_ids: ``long [n, T]`` token ids of ``samples.texts``.
    :param classes: the classes that ``samples.labels`` index.

    :ivar images: ``uint8 [n, 3, S, S]``.
    :ivar input_ids: ``long [n, T]``.
    :ivar targets: ``list[int]`` of the ``n`` labels.
    :ivar texts: the ``n`` captions.
    :ivar object_patch_masks: ``bool [n, N]``, ground-truth object patches (row-major grid).
    :ivar object_masks: ``bool [n, S, S]``, ground-truth object pixels.
    :ivar names_attributes: ``bool [n]``, whether each caption names the object's attributes.
    :ivar classes: the :class:`SyntheticClass` of each label.
    """

    def __init__(self, samples: SyntheticSamples, input_ids: torch.Tensor, classes: Sequence[SyntheticClass]) -> None:
        if input_ids.shape[0] != len(samples):
            raise ValueError(f"{input_ids.shape[0]} token rows for {len(samples)} samples")
        self.images = torch.from_numpy(samples.images)
        self.input_ids = input_ids.long()
        self.targets = samples.labels.tolist()
        self.texts = samples.texts
        self.object_patch_masks = torch.from_numpy(samples.object_patch_masks)
        self.object_masks = torch.from_numpy(samples.object_masks)
        self.names_attributes = torch.from_numpy(samples.names_attributes)
        self.classes = tuple(classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[MultimodalSample, int]:
        return make_sample(self.images[index], self.input_ids[index]), self.targets[index]


def synthetic_multimodal(
    *,
    n_classes: Annotated[int, Bounds(low=1)] = 20,
    n_experiences: int | None = 5,
    classes_per_experience: int | Sequence[int] | None = None,
    train_per_class: Annotated[int, Bounds(low=1)] = 100,
    test_per_class: Annotated[int, Bounds(low=1)] = 30,
    model_name: str = "exmask-tiny",
    image_size: Annotated[int, Bounds(low=1)] | None = None,
    attribute_prob: Annotated[float, Bounds(0, 1)] = 0.5,
    seed: int = 0,
    class_order: Sequence[int] | None = None,
    background: BackgroundKind = "default",
) -> CLScenario:
    """Class-incremental benchmark of synthetic image+caption samples, built in memory.

    The classes are the first ``n_classes`` of :func:`benchmark_classes` (disjoint from the
    classes the packaged tiny CLIP was pretrained on). Train and test samples are drawn
    independently from the same distribution.

    :param n_classes: number of classes, at most 64.
    :param n_experiences: number of experiences (uneven splits keep every class).
    :param classes_per_experience: alternative to ``n_experiences`` (which it overrides): an int or
        a list of counts.
    :param train_per_class: train samples per class.
    :param test_per_class: test samples per class.
    :param model_name: open_clip model name; fixes the tokenizer, the context length, the
        image resolution and the patch grid of the object masks.
    :param image_size: image side in pixels; defaults to the model's input resolution.
    :param attribute_prob: probability that a caption names the object's attributes.
    :param seed: seeds the samples and (unless ``class_order`` is given) the class order.
    :param class_order: a fixed class order (a permutation of ``0 .. n_classes-1``).
    :param background: ``"default"`` (patterns) or ``"photo"`` (crops of the shipped photographs);
        see :func:`generate_synthetic`.
    :return: an Avalanche ``CLScenario`` with ``train_stream`` and ``test_stream`` of
        ``(MultimodalSample, label, task)`` items, and ``info``
        (:class:`~avalanche_exmask.benchmarks.info.BenchmarkInfo`, its fields also scenario
        attributes): ``class_order``, ``classes_per_experience``, ``class_names``,
        ``split_sizes``, and as extras ``classes`` (the :class:`SyntheticClass` of each label)
        and ``train_dataset`` / ``test_dataset`` (the :class:`SyntheticMultimodalDataset` behind
        the streams, with the object masks).
    """
    pool = benchmark_classes()
    if not 1 <= n_classes <= len(pool):
        raise ValueError(f"n_classes must be in [1, {len(pool)}]; got {n_classes}")
    classes = pool[:n_classes]
    model_size, _ = model_geometry(model_name)
    patch_size = open_clip.get_model_config(model_name)["vision_cfg"]["patch_size"]
    tokenizer = get_tokenizer(model_name)
    datasets = []
    for split, n_per_class in enumerate((train_per_class, test_per_class)):
        samples = generate_synthetic(
            n_per_class=n_per_class,
            classes=classes,
            seed=_split_seed(seed, split),
            image_size=image_size or model_size,
            patch_size=patch_size,
            attribute_prob=attribute_prob,
            background=background,
        )
        datasets.append(SyntheticMultimodalDataset(samples, tokenizer(samples.texts), classes))
    train, test = datasets
    return build_class_incremental(
        train,
        test,
        train.targets,
        test.targets,
        n_experiences=n_experiences,
        classes_per_experience=classes_per_experience,
        seed=seed,
        class_order=class_order,
        class_names=[c.name for c in classes],
        extras={"classes": classes, "train_dataset": train, "test_dataset": test},
    )


def _split_seed(seed: int, split: int) -> int:
    """A distinct seed per split (0 = train, 1 = test) derived from the benchmark seed."""
    return int(np.random.SeedSequence([seed, split]).generate_state(1)[0])
