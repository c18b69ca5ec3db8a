"""Opening input images safely: sizes checked from the header before any pixel is decoded.

A file can claim any size in its header, and a small, real file can hold a huge image (a
12000 x 12000 PNG of one colour is a few kilobytes, but takes seconds and gigabytes to decode).
:func:`open_image` therefore reads the header only and refuses, before decoding:

* images whose header claims more than :attr:`ImageLimits.max_pixels` pixels
  (:data:`DEFAULT_MAX_PIXELS`, 40 megapixels), and anything PIL itself flags as a possible
  decompression bomb (``Image.DecompressionBombWarning`` and ``Image.DecompressionBombError``, above
  ``Image.MAX_IMAGE_PIXELS``, about 89.5 megapixels, whatever ``max_pixels`` says);
* images whose shorter side is below :attr:`ImageLimits.min_side` pixels (:data:`DEFAULT_MIN_SIDE`,
  8): the encoder would upscale them to the model's resolution, a sample made of a few pixels.

With ``decode=True`` it also decodes every pixel, which is the only way to find a file whose header
is fine but whose pixel data is truncated or corrupt. Every problem raises :class:`UnusableImage`,
whose message says what is wrong without naming the file (callers add the file or row).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIDE",
    "ImageLimits",
    "UnusableImage",
    "open_image",
]

#: Default :attr:`ImageLimits.max_pixels`: 40 megapixels (a 6324 x 6324 image; decoded as RGB, 120 MB).
DEFAULT_MAX_PIXELS = 40_000_000
#: Default :attr:`ImageLimits.min_side`, in pixels.
DEFAULT_MIN_SIDE = 8

ImageSource = str | os.PathLike | BinaryIO


class UnusableImage(ValueError):
    """An image that cannot be used; the message says why, without naming the file."""


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """The sizes an input image may have, checked from its header.

    :param max_pixels: the most pixels (width x height) an image may have; ``None``: no limit of
        this package's own (PIL's decompression-bomb limit still applies).
    :param min_side: the fewest pixels its shorter side may have (``1`` accepts any image).
    """

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE

    def __post_init__(self) -> None:
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"ImageLimits.max_pixels must be positive or None; got {self.max_pixels}")
        if self.min_side < 1:
            raise ValueError(f"ImageLimits.min_side must be at least 1; got {self.min_side}")

    def problem(self, width: int, height: int) -> str | None:
        """What is wrong with a ``width x height`` image (pixels), or ``None`` if it is within the limits."""
        if self.max_pixels is not None and width * height > self.max_pixels:
            return (
                f"image of {width}x{height} = {width * height} pixels exceeds the limit of {self.max_pixels} "
                f"pixels (ImageLimits.max_pixels)"
            )
        if min(width, height) < self.min_side:
            return (
                f"image of {width}x{height} pixels is smaller than {self.min_side} pixels on a side "
                f"(ImageLimits.min_side); it would be upscaled to the model's resolution"
            )
        return None


@contextlib.contextmanager
def open_image(
    source: ImageSource, *, limits: ImageLimits = ImageLimits(), decode: bool = False
) -> Iterator[Image.Image]:
    """Open an image with PIL, checking its size from the header first.

    :param source: a file path or a binary file object.
    :param limits: the sizes allowed.
    :param decode: decode every pixel before handing the image over (finds truncated pixel data).
    :raises UnusableImage: if the file is not an image PIL can read, PIL flags it as a
        decompression bomb, its size is outside ``limits``, or (``decode``) its pixels do not decode.
        Errors raised by the body of the ``with`` block pass through unchanged.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnusableImage(f"refused as a possible decompression bomb ({error})") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UnusableImage(f"not a readable image ({error})") from error
    with image:
        problem = limits.problem(*image.size)
        if problem is not None:
            raise UnusableImage(problem)
        if decode:
            try:
                image.load()
            except (OSError, SyntaxError, ValueError) as error:
                raise UnusableImage(f"pixel data does not decode ({error})") from error
        yield image
