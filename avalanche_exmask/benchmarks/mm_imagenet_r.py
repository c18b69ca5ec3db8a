"""MM-ImageNet-R: ImageNet-R images with generated captions, as a class-incremental benchmark.

ImageNet-R (Hendrycks et al., 2021) has 30,000 renditions (art, cartoons, sketches, ...) of 200
ImageNet-1k classes, in folders ``imagenet-r/<wnid>/*.jpg``. The multimodal version pairs each
image with a caption from an image-to-text model (the paper used InstructBLIP; generate them with
``python -m avalanche_exmask caption``). The human-readable names of the 200 wnids ship with this
package (``resources/imagenet_r_classes.json``).

The fixed split: within each class, files are ranked by the SHA-256 hash of their path relative to
``imagenet-r`` (``<wnid>/<file>``) and the first ``round(0.2 * n)`` are the test split. It is a
function of the file names only, so everyone with the same files gets the same split (24,000 /
6,000 images on the full data set, 80/20 in every class) with no list to download.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from avalanche.benchmarks.scenarios.generic_scenario import CLScenario

from avalanche_exmask.benchmarks.assemble import ExperienceOptions, build_folder_benchmark
from avalanche_exmask.benchmarks.hf import from_hf_dataset
from avalanche_exmask.benchmarks.records import PathLike, Records, folder_records
from avalanche_exmask.benchmarks.splits import split_by_file_lists
from avalanche_exmask.data.encode import SampleEncoder
from avalanche_exmask.data.image_text import InputIssues, OnError
from avalanche_exmask.data.images import ImageLimits

__all__ = ["IMAGENET_R_CLASSES", "imagenet_r_class_names", "fixed_split", "mm_imagenet_r"]

_CLASSES_FILE = Path(__file__).parent / "resources" / "imagenet_r_classes.json"


def imagenet_r_class_names() -> dict[str, str]:
    """``{wnid: readable name}`` for the 200 ImageNet-R classes, sorted by wnid."""
    with open(_CLASSES_FILE, encoding="utf-8") as file:
        return json.load(file)


#: The 200 ImageNet-R wnids mapped to readable class names.
IMAGENET_R_CLASSES: Mapping[str, str] = imagenet_r_class_names()


def _hash_rank(relative_path: str) -> str:
    return hashlib.sha256(relative_path.encode("utf-8")).hexdigest()


def fixed_split(records: Records, *, test_fraction: float = 0.2) -> dict[str, Records]:
    """The fixed train/test split of MM-ImageNet-R (see the module docstring).

    :param records: records whose ``sources`` are paths relative to ``imagenet-r``
        (``<wnid>/<file>``) and whose ``classes`` are wnids.
    :param test_fraction: per-class share of the test split; ``round(test_fraction * n)``
        files of a class of ``n``, at least one and at most ``n - 1``.
    :return: ``{"train": ..., "test": ...}``, each in the order of ``records``.
    """
    by_class: dict[str, list[int]] = {}
    for index, cls in enumerate(records.classes):
        by_class.setdefault(cls, []).append(index)
    test: set[int] = set()
    for indices in by_class.values():
        n_test = min(max(round(test_fraction * len(indices)), 1), len(indices) - 1)
        ranked = sorted(indices, key=lambda i: _hash_rank(records.sources[i]))
        test.update(ranked[:n_test])
    return {
        "train": records.select([i for i in range(len(records)) if i not in test]),
        "test": records.select(sorted(test)),
    }


def _resolve_root(root: PathLike) -> Path:
    """``root`` itself, or ``root/imagenet-r`` when ``root`` is the folder holding it."""
    root = Path(root)
    return root / "imagenet-r" if (root / "imagenet-r").is_dir() else root


def mm_imagenet_r(
    root: PathLike | None = None,
    captions: PathLike | Mapping[str, str] | None = None,
    *,
    n_experiences: int | None = 10,
    classes_per_experience: int | Sequence[int] | None = None,
    seed: int = 0,
    class_order: Sequence[int] | None = None,
    validation_fraction: float = 0.0,
    model_name: str = "exmask-tiny",
    encoder: SampleEncoder | None = None,
    verify_images: bool = True,
    on_error: OnError = "raise",
    dataset=None,
    train_files: PathLike | Sequence[str] | None = None,
    test_files: PathLike | Sequence[str] | None = None,
    image_limits: ImageLimits = ImageLimits(),
) -> CLScenario:
    """MM-ImageNet-R as a class-incremental benchmark (the paper uses ``n_experiences`` 5, 10, 20).

    Items are ``(MultimodalSample, label)`` read from disk when indexed (``image`` ``uint8
    [3, S, S]``, ``input_ids`` ``long [T]``, ``S`` and ``T`` from the model). Labels follow the
    sorted wnid folders; 200 classes in 10 experiences gives 20 classes each, and uneven splits
    keep every class.

    :param root: the ``imagenet-r`` folder (``<wnid>/*.jpg``), or the folder that holds it.
        Any set of wnid folders works; wnids outside the shipped list keep the wnid as name.
    :param captions: captions file with image paths relative to ``imagenet-r``
        (``<wnid>/<file>``), as written by ``python -m avalanche_exmask caption --images
        .../imagenet-r``; or a mapping ``{path: text}``.
    :param n_experiences: number of experiences ``L``.
    :param classes_per_experience: instead of ``n_experiences`` (which it overrides): an int or a
        list of counts.
    :param seed: seed of the class order and of the validation split (also of the test split
        when ``dataset`` is a single HF split).
    :param class_order: a fixed order of the labels.
    :param validation_fraction: if positive, this seeded, stratified fraction of each train
        class becomes ``benchmark.valid_stream`` (and leaves the train stream).
    :param model_name: open_clip model whose resolution and tokenizer encode the items.
    :param encoder: an explicit encoder (overrides ``model_name``).
    :param verify_images: when building, open every image, check its size against ``image_limits``
        and decode all of its pixels (one full decode per image), so that no unusable image is left
        for training to find; missing and empty files are always caught.
    :param on_error: ``"raise"`` or ``"skip"`` bad input (see
        :func:`~avalanche_exmask.benchmarks.image_text_folder.image_text_folder`).
    :param dataset: a Hugging Face ``Dataset``/``DatasetDict`` (``image``, ``text``, ``label``
        columns; labels that are wnids get readable names) instead of ``root`` and ``captions``.
    :param train_files: explicit train image paths (``<wnid>/<file>``, a sequence or a text file
        with one per line) instead of the fixed split; give ``test_files`` too.
    :param test_files: explicit test image paths.
    :param image_limits: the image sizes allowed (default: at most
        :data:`~avalanche_exmask.data.images.DEFAULT_MAX_PIXELS` pixels, at least
        :data:`~avalanche_exmask.data.images.DEFAULT_MIN_SIDE` on a side), checked from the header
        before any image is decoded, at build time and when an item is loaded.
    :return: a ``CLScenario`` (see
        :func:`~avalanche_exmask.benchmarks.assemble.build_benchmark`);
        ``class_names`` are readable names and ``class_keys`` the wnids.
    """
    encoder = encoder or SampleEncoder.for_model(model_name)
    names = IMAGENET_R_CLASSES
    experiences: ExperienceOptions = dict(
        n_experiences=n_experiences, classes_per_experience=classes_per_experience, seed=seed, class_order=class_order
    )
    if dataset is not None:
        return from_hf_dataset(
            dataset,
            encoder=encoder,
            verify_images=verify_images,
            image_limits=image_limits,
            validation_fraction=validation_fraction,
            on_error=on_error,
            rename_class=lambda wnid: names.get(wnid, wnid),
            **experiences,
        )
    if root is None or captions is None:
        raise ValueError("give `root` and `captions`, or a Hugging Face `dataset`")
    if (train_files is None) != (test_files is None):
        raise ValueError("give both `train_files` and `test_files`, or neither")
    root = _resolve_root(root)
    issues = InputIssues(on_error)
    records = folder_records(root, captions, issues=issues)
    if train_files is not None:
        assert test_files is not None  # given together with train_files (checked above)
        splits = split_by_file_lists(records, train_files=train_files, test_files=test_files, issues=issues)
    else:
        splits = fixed_split(records)
    wnids = sorted(set(records.classes))
    return build_folder_benchmark(
        splits, root=root, encoder=encoder, issues=issues, verify_images=verify_images, image_limits=image_limits,
        validation_fraction=validation_fraction, class_keys=wnids, class_names=[names.get(w, w) for w in wnids], **experiences,
    )
