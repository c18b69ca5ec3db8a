"""The generic image-text benchmark generator: a folder of images per class and their captions.

On-disk layout::

    root/<class>/<file>          one folder per class, images inside (.jpg, .png, ...)
    captions.jsonl               {"image": "<class>/<file>", "text": "..."} per line
      or captions.json           {"<class>/<file>": "...", ...}

The benchmark is built in the stages every image-text generator shares: collect
:class:`~avalanche_exmask.benchmarks.records.Records` (no image is read), split them
(:mod:`avalanche_exmask.benchmarks.splits`), check the images and assemble the Avalanche
benchmark (:func:`~avalanche_exmask.benchmarks.assemble.build_benchmark`), whose datasets read
each image only when it is indexed. A Hugging Face dataset goes through
:func:`~avalanche_exmask.benchmarks.hf.from_hf_dataset` instead.

Bad input is handled by :class:`~avalanche_exmask.data.image_text.InputIssues`: by default the
first problem raises an error naming the file and line; ``on_error="skip"`` skips, logs and
reports every problem in ``benchmark.info.skipped``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from avalanche.benchmarks.scenarios.generic_scenario import CLScenario

from avalanche_exmask.benchmarks.assemble import ExperienceOptions, build_folder_benchmark
from avalanche_exmask.benchmarks.hf import from_hf_dataset
from avalanche_exmask.benchmarks.records import PathLike, folder_records, read_file_list
from avalanche_exmask.benchmarks.splits import split_by_file_lists, stratified_split
from avalanche_exmask.data.encode import SampleEncoder
from avalanche_exmask.data.image_text import InputIssues, OnError
from avalanche_exmask.data.images import ImageLimits

__all__ = ["image_text_folder"]


def image_text_folder(
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
    test_fraction: float = 0.2,
    image_limits: ImageLimits = ImageLimits(),
    classes: Sequence[str] | None = None,
) -> CLScenario:
    """A class-incremental benchmark from a folder of images per class and their captions.

    Items are ``(MultimodalSample, label)`` (``image`` ``uint8 [3, S, S]``, ``input_ids`` ``long
    [T]``, ``S`` and ``T`` from the model), read from disk when indexed. Labels follow the
    sorted class folder names; the class order over experiences is drawn from ``seed`` or given
    by ``class_order``. Uneven splits are allowed and no class is dropped.

    :param root: the image root, holding ``<class>/<file>``.
    :param captions: a captions file (JSON Lines ``{"image": "<class>/<file>", "text": ...}``
        or a ``.json`` object ``{path: text}``) or a mapping ``{path: text}``.
    :param n_experiences: number of experiences.
    :param classes_per_experience: instead of ``n_experiences`` (which it overrides): an int or a
        list of counts.
    :param seed: seed of the class order and of the train/test and validation splits.
    :param class_order: a fixed order of the labels.
    :param validation_fraction: if positive, this seeded, stratified fraction of each train
        class becomes ``benchmark.valid_stream`` (and leaves the train stream).
    :param model_name: open_clip model whose resolution and tokenizer encode the items.
    :param encoder: an explicit encoder (overrides ``model_name``).
    :param verify_images: when building, open every image, check its size against ``image_limits``
        and decode all of its pixels (one full decode per image), so that no unusable image is left
        for training to find; missing and empty files are always caught.
    :param on_error: ``"raise"`` (default): the first bad input raises
        :class:`~avalanche_exmask.data.image_text.BadInputError` naming the file (and line);
        ``"skip"``: bad items are left out, logged and listed in ``benchmark.info.skipped``.
    :param dataset: a Hugging Face ``Dataset``/``DatasetDict`` with ``image``, ``text`` and
        ``label`` columns, used instead of ``root`` and ``captions`` (see
        :func:`~avalanche_exmask.benchmarks.hf.from_hf_dataset`).
    :param train_files: relative image paths of the train split (a sequence, or a text file
        with one path per line); give ``test_files`` too.
    :param test_files: relative image paths of the test split.
    :param test_fraction: without file lists, the per-class fraction held out for test
        (seeded, stratified).
    :param image_limits: the image sizes allowed (default: at most
        :data:`~avalanche_exmask.data.images.DEFAULT_MAX_PIXELS` pixels, at least
        :data:`~avalanche_exmask.data.images.DEFAULT_MIN_SIDE` on a side), checked from the header
        before any image is decoded, at build time and when an item is loaded.
    :param classes: only these class folders (a slice of a larger folder); default all. Labels
        follow the sorted names of the classes kept.
    :raises ValueError: naming the ``classes`` that are not class folders of ``root``.
    :return: see :func:`~avalanche_exmask.benchmarks.assemble.build_benchmark`.
    """
    encoder = encoder or SampleEncoder.for_model(model_name)
    experiences: ExperienceOptions = dict(
        n_experiences=n_experiences, classes_per_experience=classes_per_experience, seed=seed, class_order=class_order
    )
    if dataset is not None:
        if classes is not None:
            raise ValueError("`classes` selects class folders; it does not apply to a Hugging Face `dataset`")
        return from_hf_dataset(
            dataset,
            encoder=encoder,
            verify_images=verify_images,
            image_limits=image_limits,
            validation_fraction=validation_fraction,
            on_error=on_error,
            test_fraction=test_fraction,
            **experiences,
        )
    if root is None or captions is None:
        raise ValueError("give `root` and `captions`, or a Hugging Face `dataset`")
    if (train_files is None) != (test_files is None):
        raise ValueError("give both `train_files` and `test_files`, or neither")
    issues = InputIssues(on_error)
    records = folder_records(root, captions, issues=issues)
    if classes is not None:
        unknown = sorted(set(classes) - set(records.classes))
        if unknown:
            raise ValueError(f"classes {unknown} are not class folders with captioned images under {root}")
        records = records.select([i for i, cls in enumerate(records.classes) if cls in set(classes)])
    if train_files is not None:
        assert test_files is not None  # given together with train_files (checked above)
        if classes is not None:  # the lists name images of every class; keep those of the selected ones
            train_files, test_files = (
                [path for path in read_file_list(files) if path.split("/", 1)[0] in set(classes)]
                for files in (train_files, test_files)
            )
        splits = split_by_file_lists(records, train_files=train_files, test_files=test_files, issues=issues)
    else:
        train, test = stratified_split(records.classes, fraction=test_fraction, seed=seed)
        splits = {"train": records.select(train), "test": records.select(test)}
    return build_folder_benchmark(
        splits, root=root, encoder=encoder, issues=issues, verify_images=verify_images, image_limits=image_limits,
        validation_fraction=validation_fraction, **experiences,
    )
