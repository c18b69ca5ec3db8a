"""Image-text pairs read lazily, and the policy for bad input.

The datasets here hold only where each image is (a file path, or a row of a Hugging Face
``datasets.Dataset``), its text and its label; an image is read and encoded by
:class:`~avalanche_exmask.data.encode.SampleEncoder` only when its item is indexed, so memory does
not grow with the number of images.

Bad input (a missing or unreadable image, an empty text, an image without a caption, ...) goes
through :class:`InputIssues`: by default the first problem raises :class:`BadInputError` naming the
file (and line); with ``on_error="skip"`` every problem is logged, counted and kept in
:attr:`InputIssues.skipped` so that nothing is dropped silently. Images are opened through
:func:`~avalanche_exmask.data.images.open_image`, which checks their size against
:class:`~avalanche_exmask.data.images.ImageLimits` from the header before decoding them.
"""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from typing import Literal

from torch.utils.data import Dataset

from avalanche_exmask.data.encode import SampleEncoder
from avalanche_exmask.data.images import ImageLimits, UnusableImage, open_image
from avalanche_exmask.data.sample import MultimodalSample

__all__ = [
    "OnError",
    "BadInputError",
    "InputIssues",
    "check_image_file",
    "ImageTextDataset",
    "HFImageTextDataset",
    "hf_image_source",
]

logger = logging.getLogger(__name__)

#: What to do with bad input: ``"raise"`` on the first problem, or ``"skip"`` it and report it.
OnError = Literal["raise", "skip"]


class BadInputError(ValueError):
    """A problem with the input data; the message starts with the file (and line) at fault."""


class InputIssues:
    """Collects problems found in the input data under an ``on_error`` policy.

    :param on_error: ``"raise"``: :meth:`report` raises :class:`BadInputError` at once;
        ``"skip"``: it records the problem, and the caller leaves the item out.
    """

    def __init__(self, on_error: OnError = "raise") -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f'on_error must be "raise" or "skip"; got {on_error!r}')
        self.on_error = on_error
        #: ``(where, reason)`` of every skipped item; ``where`` is a path, ``path:line`` or a class.
        self.skipped: list[tuple[str, str]] = []

    def report(self, where: str, reason: str) -> None:
        """Raise or record one problem.

        :param where: the file, ``file:line`` or class at fault.
        :param reason: what is wrong, in words.
        :raises BadInputError: when ``on_error="raise"``.
        """
        if self.on_error == "raise":
            raise BadInputError(f"{where}: {reason} (pass on_error='skip' to skip and report such items)")
        logger.debug("skipped %s: %s", where, reason)
        self.skipped.append((where, reason))

    def log_summary(self, what: str) -> None:
        """Log one warning with the number of skipped items and the first few of them."""
        if self.skipped:
            first = "; ".join(f"{where}: {reason}" for where, reason in self.skipped[:5])
            more = f" (and {len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
            logger.warning("%s: skipped %d item(s): %s%s", what, len(self.skipped), first, more)


def check_image_file(
    path: str | os.PathLike, *, verify: bool = True, limits: ImageLimits = ImageLimits()
) -> str | None:
    """Check that an image file can be used; return what is wrong, or ``None``.

    :param path: the image file.
    :param verify: also open it with PIL, check its size against ``limits`` from the header and
        decode every pixel (one full decode per image), so that a file with a valid header but
        truncated or corrupt pixel data is caught here, not when its item is loaded. Without it,
        only a missing, unresolvable or empty file is caught.
    :param limits: the image sizes allowed.
    """
    if not os.path.isfile(path):
        if os.path.islink(path):
            return "symbolic link that does not resolve to a file (broken, or a loop)"
        return "image file not found"
    if os.path.getsize(path) == 0:
        return "image file is empty"
    if verify:
        try:
            with open_image(path, limits=limits, decode=True):
                pass
        except UnusableImage as error:
            return str(error)
    return None


class ImageTextDataset(Dataset):
    """Image files with their texts and labels; each image is read and encoded on access.

    Items are ``(MultimodalSample, label)``: ``image`` ``uint8 [3, S, S]`` and ``input_ids``
    ``long [T]`` with ``S`` and ``T`` set by ``encoder``.

    :param paths: one image file per item.
    :param texts: one text per item.
    :param labels: one integer label per item.
    :param encoder: turns a PIL image and a text into a sample.
    :param limits: the image sizes allowed (checked from the header before decoding).
    """

    def __init__(
        self,
        paths: Sequence[str],
        texts: Sequence[str],
        labels: Sequence[int],
        *,
        encoder: SampleEncoder,
        limits: ImageLimits = ImageLimits(),
    ) -> None:
        if not len(paths) == len(texts) == len(labels):
            raise ValueError(f"got {len(paths)} paths, {len(texts)} texts and {len(labels)} labels")
        self.paths = [os.fspath(p) for p in paths]
        self.texts = list(texts)
        self.targets = [int(label) for label in labels]
        self.encoder = encoder
        self.limits = limits

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[MultimodalSample, int]:
        path = self.paths[index]
        try:
            with open_image(path, limits=self.limits) as image:
                sample = self.encoder(image, self.texts[index])
        except UnusableImage as error:
            raise BadInputError(f"{path}: {error}") from error
        except (OSError, SyntaxError) as error:
            raise BadInputError(f"{path}: cannot read image ({error})") from error
        return sample, self.targets[index]


class HFImageTextDataset(Dataset):
    """Rows of a Hugging Face ``datasets.Dataset``; each image is decoded and encoded on access.

    The Arrow table stays memory-mapped; only the selected row is read. Images are decoded here
    (through :func:`~avalanche_exmask.data.images.open_image`), not by ``datasets``, so their size
    is checked before decoding. Items are ``(MultimodalSample, label)`` as in
    :class:`ImageTextDataset`.

    :param dataset: a ``datasets.Dataset`` whose ``image_column`` is an ``Image`` feature.
    :param rows: the rows of ``dataset`` that make this dataset, in order.
    :param labels: one integer label per row in ``rows``.
    :param encoder: turns a PIL image and a text into a sample.
    :param image_column: name of the image column.
    :param text_column: name of the text column.
    :param limits: the image sizes allowed (checked from the header before decoding).
    """

    def __init__(
        self,
        dataset,
        rows: Sequence[int],
        labels: Sequence[int],
        *,
        encoder: SampleEncoder,
        image_column: str = "image",
        text_column: str = "text",
        limits: ImageLimits = ImageLimits(),
    ) -> None:
        from datasets import Image as ImageFeature

        if len(rows) != len(labels):
            raise ValueError(f"got {len(rows)} rows and {len(labels)} labels")
        columns = dataset.select_columns([image_column, text_column])
        self.dataset = columns.cast_column(image_column, ImageFeature(decode=False))
        self.rows = [int(r) for r in rows]
        self.targets = [int(label) for label in labels]
        self.encoder = encoder
        self.image_column = image_column
        self.text_column = text_column
        self.limits = limits

    @property
    def texts(self) -> list[str]:
        """The text of every item (reads the text column only)."""
        return list(self.dataset.select(self.rows)[self.text_column])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[MultimodalSample, int]:
        row = self.rows[index]
        record = self.dataset[row]
        try:
            with open_image(hf_image_source(record[self.image_column]), limits=self.limits) as image:
                sample = self.encoder(image, record[self.text_column])
        except UnusableImage as error:
            raise BadInputError(f"row {row} of the Hugging Face dataset: {error}") from error
        except (OSError, SyntaxError) as error:
            raise BadInputError(f"row {row} of the Hugging Face dataset: cannot read image ({error})") from error
        return sample, self.targets[index]


def hf_image_source(value: dict | None) -> io.BytesIO | str:
    """What :func:`~avalanche_exmask.data.images.open_image` reads for one undecoded value of a
    Hugging Face ``Image`` column (``{"bytes": ..., "path": ...}``): its bytes, else its path.

    :raises UnusableImage: if the value holds neither.
    """
    if value is None or (value.get("bytes") is None and not value.get("path")):
        raise UnusableImage("no image")
    return io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
