"""Drawing the synthetic benchmark's images: each sample's random layout and its rendering.

A sample shows one object of its class, at a random place and scale, over a random textured
background with smaller distractor shapes of other kinds behind it. :func:`draw_layout` draws every
random parameter of a batch of samples (object place, scale, rotation and colour; background
pattern and colours; distractors); :func:`render` draws the images (background, distractors, then
the object on top, each shape filled with its texture) and adds Gaussian pixel noise. Both draw
from the caller's ``numpy.random.Generator``; geometry is in pixels of a square image of side
``S``, colours in 0..255 RGB.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avalanche_exmask.benchmarks.synthetic_catalogue import COLOURS, SHAPES, TEXTURES

__all__ = ["BACKGROUND_COLOURS", "BACKGROUND_PATTERNS", "Layout", "draw_layout", "render"]

#: Background colours: name -> nominal RGB (0..255).
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "grey": (125, 125, 125),
    "beige": (200, 185, 150),
    "brown": (105, 75, 50),
    "navy": (35, 45, 85),
    "olive": (105, 110, 55),
    "white": (225, 225, 220),
    "black": (28, 28, 30),
    "teal": (45, 95, 95),
}
#: Background patterns: how the background's two colours are mixed (``plain`` shows the first).
BACKGROUND_PATTERNS: tuple[str, ...] = ("plain", "striped", "checkered", "tiled")

# Geometry, as fractions of the image side.
_OBJECT_RADIUS = (0.13, 0.28)
_DISTRACTOR_RADIUS = (0.06, 0.11)
_MAX_DISTRACTORS = 3
_MAX_ROTATION = np.pi / 9  # radians; kept small so that a square and a diamond stay different
_TEXTURE_PERIOD = 6.0  # pixels
_DARK_FACTOR = 0.35  # brightness of the dark half of a texture pattern
_PIXEL_NOISE = 7.0  # std of the Gaussian pixel noise, in 0..255 units
_TILES = 5  # tiles per side of the tiled background (not a divisor of the patch grid)


@dataclass
class Layout:
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


def draw_layout(rng: np.random.Generator, shape_ids: np.ndarray, colour_ids: np.ndarray, size: int) -> Layout:
    """Draw the random parameters of ``len(shape_ids)`` samples of side ``size`` pixels (see
    :class:`Layout`); ``shape_ids`` index :data:`SHAPES` and ``colour_ids`` :data:`COLOURS`."""
    n = len(shape_ids)
    radius = rng.uniform(*_OBJECT_RADIUS, size=n) * size
    centre = rng.uniform(radius[:, None], size - radius[:, None], size=(n, 2))
    nominal = np.array(list(COLOURS.values()), dtype=np.float32)[colour_ids]
    colour = nominal * rng.uniform(0.8, 1.1, size=(n, 1)) + rng.uniform(-18, 18, size=(n, 3))
    background = np.stack(
        [rng.integers(len(BACKGROUND_PATTERNS), size=n), rng.integers(len(BACKGROUND_COLOURS), size=n)], axis=1
    )
    base = np.array(list(BACKGROUND_COLOURS.values()), dtype=np.float32)
    first = base[background[:, 1]] + rng.uniform(-12, 12, size=(n, 3))
    second = 0.7 * first + 0.3 * base[rng.integers(len(base), size=n)] + rng.uniform(-25, 25, size=(n, 3))
    other_shapes = (shape_ids[:, None] + rng.integers(1, len(SHAPES), size=(n, _MAX_DISTRACTORS))) % len(SHAPES)
    distractor_radius = rng.uniform(*_DISTRACTOR_RADIUS, size=(n, _MAX_DISTRACTORS)) * size
    return Layout(
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


def render(
    rng: np.random.Generator,
    layout: Layout,
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


def _background(layout: Layout, part: slice, size: int) -> np.ndarray:
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
