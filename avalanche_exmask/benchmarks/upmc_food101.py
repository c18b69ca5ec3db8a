"""UPMC-Food101 as a class-incremental benchmark.

UPMC-Food101 (Wang et al., 2015) pairs 90,704 web images of the 101 Food-101 classes with the
title of the web page they came from (67,988 train / 22,716 test). Layout::

    root/images/{train,test}/<class>/<file>.jpg
    root/texts/{train,test}_titles.csv      no header; rows  filename,title,class

The CSV files are read with the ``csv`` module (quoted commas, quotes and non-ASCII titles are
fine). A row with more than three fields (a title with an unquoted comma) keeps its first field
as file name, its last as class and joins the rest, with commas, as the title. Titles longer than
the model's context length are truncated when encoded; their number is ``benchmark.info.n_truncated``.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from avalanche.benchmarks.scenarios.generic_scenario import CLScenario

from avalanche_exmask.benchmarks.assemble import ExperienceOptions, build_folder_benchmark
from avalanche_exmask.benchmarks.hf import from_hf_dataset
from avalanche_exmask.benchmarks.records import PathLike, Records, list_class_images
from avalanche_exmask.data.encode import SampleEncoder
from avalanche_exmask.data.image_text import BadInputError, InputIssues, OnError
from avalanche_exmask.data.images import ImageLimits

__all__ = ["read_titles", "upmc_food101"]

_SPLITS = ("train", "test")


def read_titles(root: PathLike, split: str, *, issues: InputIssues) -> Records:
    """The (image, title, class) rows of ``texts/<split>_titles.csv`` that have their image.

    :param root: the UPMC-Food101 root (holding ``images`` and ``texts``).
    :param split: ``"train"`` or ``"test"``.
    :param issues: receives malformed rows (named ``file:line``), empty titles, duplicate file
        names, rows whose image is missing and images that have no row.
    :return: records with ``sources`` ``images/<split>/<class>/<file>`` relative to ``root``.
    :raises FileNotFoundError: if the CSV file or the image folder is missing.
    """
    root = Path(root)
    csv_path = root / "texts" / f"{split}_titles.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"UPMC-Food101 titles file not found: {csv_path}")
    image_root = root / "images" / split
    on_disk = {f"images/{split}/{f}" for files in list_class_images(image_root, issues=issues).values() for f in files}
    records = Records()
    first_line: dict[str, int] = {}
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            for row in reader:
                where = f"{csv_path}:{reader.line_num}"
                if not any(field.strip() for field in row):
                    continue
                if len(row) < 3:
                    issues.report(where, f"expected 3 fields filename,title,class; got {len(row)}")
                    continue
                filename, title, cls = row[0].strip(), ",".join(row[1:-1]), row[-1].strip()
                source = f"images/{split}/{cls}/{filename}"
                if source in first_line:
                    issues.report(where, f"second row for {filename} (first at line {first_line[source]})")
                    continue
                first_line[source] = reader.line_num
                if not title.strip():
                    issues.report(where, f"empty title for {filename}")
                elif source not in on_disk:
                    issues.report(where, f"image {root / source} not found")
                else:
                    records.append(source, title, cls)
    except UnicodeDecodeError as error:
        raise BadInputError(f"{csv_path}: not UTF-8 text ({error})") from error
    except csv.Error as error:
        raise BadInputError(f"{csv_path}: malformed CSV ({error})") from error
    for source in sorted(on_disk - first_line.keys()):
        issues.report(str(root / source), f"image without a row in {csv_path}")
    return records


def upmc_food101(
    root: PathLike | None = None,
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
    image_limits: ImageLimits = ImageLimits(),
) -> CLScenario:
    """UPMC-Food101 as a class-incremental benchmark over its official train/test split.

    Items are ``(MultimodalSample, label)`` read from disk when indexed (``image`` ``uint8
    [3, S, S]``, ``input_ids`` ``long [T]``, ``S`` and ``T`` from the model). Labels follow the
    sorted class names; 101 classes in 10 experiences gives ``[11, 10, ..., 10]``.

    :param root: the data set root, holding ``images/{train,test}/<class>/`` and
        ``texts/{train,test}_titles.csv``.
    :param n_experiences: number of experiences.
    :param classes_per_experience: instead of ``n_experiences`` (which it overrides): an int or a
        list of counts.
    :param seed: seed of the class order and of the validation split.
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
    :param dataset: a Hugging Face ``DatasetDict`` with ``train`` and ``test`` splits (or one
        ``Dataset``, then split 80/20 per class) with ``image``, ``text`` and ``label`` columns,
        instead of ``root``.
    :param image_limits: the image sizes allowed (default: at most
        :data:`~avalanche_exmask.data.images.DEFAULT_MAX_PIXELS` pixels, at least
        :data:`~avalanche_exmask.data.images.DEFAULT_MIN_SIDE` on a side), checked from the header
        before any image is decoded, at build time and when an item is loaded.
    :return: a ``CLScenario`` (see
        :func:`~avalanche_exmask.benchmarks.assemble.build_benchmark`);
        ``info.n_truncated`` counts the titles longer than the context length.
    """
    encoder = encoder or SampleEncoder.for_model(model_name)
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
            **experiences,
        )
    if root is None:
        raise ValueError("give `root` or a Hugging Face `dataset`")
    issues = InputIssues(on_error)
    splits = {split: read_titles(root, split, issues=issues) for split in _SPLITS}
    return build_folder_benchmark(
        splits, root=root, encoder=encoder, issues=issues, verify_images=verify_images, image_limits=image_limits,
        validation_fraction=validation_fraction, **experiences,
    )
