"""The captions of the synthetic benchmark.

A caption always describes a sample's context (where the object is, the background, the
distractors) but names the object's attributes only when asked to (``names_attributes``), so the
text alone does not solve the task. One of three templates is drawn per sample.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avalanche_exmask.benchmarks.backgrounds import PHOTO_SOURCES
from avalanche_exmask.benchmarks.synthetic_catalogue import COLOURS, SHAPES, SyntheticClass
from avalanche_exmask.benchmarks.synthetic_render import BACKGROUND_COLOURS, BACKGROUND_PATTERNS, Layout

__all__ = ["captions"]

_POSITIONS: tuple[str, ...] = (
    "at the top left", "at the top", "at the top right",
    "on the left", "in the centre", "on the right",
    "at the bottom left", "at the bottom", "at the bottom right",
)
_GENERIC_SUBJECTS: tuple[str, ...] = ("an object", "a shape", "something", "a thing")
_NUMBER_WORDS: tuple[str, ...] = ("no", "one", "two", "three")


def captions(
    rng: np.random.Generator,
    classes: Sequence[SyntheticClass],
    labels: np.ndarray,
    layout: Layout,
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
    colour_names, background_colour_names = list(COLOURS), list(BACKGROUND_COLOURS)
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
            background = f"a {BACKGROUND_PATTERNS[pattern]} {background_colour_names[colour]} background"
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
