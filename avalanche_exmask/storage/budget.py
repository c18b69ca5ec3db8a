"""Memory budgets in bytes, and the paper's unit ("samples per class") converted to bytes.

A plain exemplar costs its ``uint8`` image, ``3 H W`` bytes, plus a full context of ``uint16``
token ids, ``2 T`` bytes. :class:`~avalanche_exmask.storage.codecs.raw.RawCodec` stores only the
real tokens, so a raw record never costs more than this and a budget of ``n`` samples per class
always fits ``n`` raw exemplars per class. Labels are not counted (see
:mod:`avalanche_exmask.storage.codecs.base`).
"""
from __future__ import annotations

__all__ = ["TOKEN_ID_NBYTES", "plain_exemplar_nbytes", "budget_from_samples_per_class"]

TOKEN_ID_NBYTES = 2
"""Bytes per stored token id (``uint16``)."""


def plain_exemplar_nbytes(image_size: int | tuple[int, int], context_length: int) -> int:
    """Bytes of one plain exemplar: ``3 H W + 2 T``.

    :param image_size: ``S`` (square) or ``(H, W)``, in pixels.
    :param context_length: ``T``, in tokens.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if height <= 0 or width <= 0 or context_length < 0:
        raise ValueError(f"image_size must be positive and context_length >= 0; got {image_size}, {context_length}")
    return 3 * height * width + TOKEN_ID_NBYTES * context_length


def budget_from_samples_per_class(
    samples_per_class: float, n_classes: int, image_size: int | tuple[int, int], context_length: int
) -> int:
    """Total budget in bytes worth ``samples_per_class`` plain exemplars for each of ``n_classes``.

    :param samples_per_class: the paper's unit (default there: 5); may be fractional.
    :param n_classes: the classes the budget is for (usually every class of the stream).
    :return: ``floor(samples_per_class x n_classes x plain_exemplar_nbytes(...))`` bytes.
    """
    if samples_per_class <= 0 or n_classes <= 0:
        raise ValueError(f"samples_per_class and n_classes must be positive; got {samples_per_class}, {n_classes}")
    return int(samples_per_class * n_classes * plain_exemplar_nbytes(image_size, context_length))
