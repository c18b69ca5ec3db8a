"""The class catalogue of the synthetic benchmark: every *shape x colour x texture* combination.

Every class is one entry of a fixed catalogue (``"red striped triangle"``). The catalogue is split
once, by a fixed rule, into *benchmark* classes and *pretraining* classes
(:func:`benchmark_classes`, :func:`pretraining_classes`): the tiny CLIP model shipped with the
package was pretrained on the latter only, so the benchmark's classes are new combinations of
attributes it has seen.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SHAPES",
    "COLOURS",
    "TEXTURES",
    "SyntheticClass",
    "SYNTHETIC_CATALOGUE",
    "benchmark_classes",
    "pretraining_classes",
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

