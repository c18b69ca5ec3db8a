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

This module holds the samples (:func:`generate_synthetic`), their dataset and the benchmark
(:func:`synthetic_multimodal`); the catalogue is :mod:`~avalanche_exmask.benchmarks.synthetic_catalogue`
(its names are importable from here too), the drawing
:mod:`~avalanche_exmask.benchmarks.synthetic_render` and the captions
:mod:`~avalanche_exmask.benchmarks.synthetic_captions`.

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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import open_clip
import torch
from avalanche.benchmarks.scenarios.generic_scenario import CLScenario
from torch.utils.data import Dataset

from avalanche_exmask.benchmarks.backgrounds import BackgroundKind, photo_backgrounds
from avalanche_exmask.benchmarks.common import build_class_incremental
from avalanche_exmask.benchmarks.synthetic_captions import captions
from avalanche_exmask.benchmarks.synthetic_catalogue import (
    COLOURS,
    SHAPES,
    SYNTHETIC_CATALOGUE,
    TEXTURES,
    SyntheticClass,
    benchmark_classes,
    pretraining_classes,
)
from avalanche_exmask.benchmarks.synthetic_render import draw_layout, render
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

_CHUNK = 256  # images drawn at once (bounds memory; fixed so results do not depend on n)


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
    layout = draw_layout(rng, shape_ids, colour_ids, image_size)
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
        images[part], object_masks[part] = render(
            rng, layout, part, shape_ids[part], texture_ids[part], size, backdrop
        )
    grid = size // patch_size
    patch_masks = object_masks.reshape(n, grid, patch_size, grid, patch_size).any(axis=(2, 4)).reshape(n, -1)
    texts = captions(rng, classes, labels, layout, names_attributes, size, photos)
    return SyntheticSamples(images, texts, labels, object_masks, patch_masks, names_attributes)


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
