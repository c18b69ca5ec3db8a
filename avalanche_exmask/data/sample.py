"""The one multimodal sample type used by benchmarks, buffers and models.

A :class:`MultimodalSample` is a ``tensordict`` tensorclass with two fields:

* ``image``: ``uint8`` tensor ``[3, H, W]`` at the model's input resolution (not normalised;
  the model normalises it). Batched: ``[B, 3, H, W]``.
* ``input_ids``: ``long`` tensor ``[T]``, token ids padded with zeros to the model's context
  length (open_clip tokenizer). Batched: ``[B, T]``.

Why a tensorclass: torch's default collate batches it into a batched ``MultimodalSample``,
and it supports ``.to(device)``, tensor indexing and ``torch.cat``, which Avalanche 0.6.0's
built-in strategies (Replay, ER-ACE, MIR, DER, EWC, AGEM, ...) rely on.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

import torch
from tensordict import tensorclass

__all__ = ["MultimodalSample", "make_sample", "validate_sample"]


@tensorclass
class MultimodalSample:
    """An (image, text) pair, or a batch of them (see module docstring for shapes)."""

    image: torch.Tensor
    input_ids: torch.Tensor

    if TYPE_CHECKING:
        # @tensorclass adds these at run time, but its type hint (it returns the class as given)
        # does not declare them: the constructor's batch keywords and the batch operations used here.
        def __init__(
            self,
            image: torch.Tensor,
            input_ids: torch.Tensor,
            *,
            batch_size: Sequence[int],
            device: torch.device | str | int | None = None,
            names: Sequence[str] | None = None,
        ) -> None: ...

        def __getitem__(self, index: int | slice | torch.Tensor) -> Self: ...

        def __len__(self) -> int: ...

        def to(self, *args: Any, **kwargs: Any) -> Self: ...


def make_sample(image: torch.Tensor, input_ids: torch.Tensor) -> MultimodalSample:
    """Build one (unbatched) sample after checking shapes and dtypes.

    :param image: ``uint8`` ``[3, H, W]``.
    :param input_ids: integer ``[T]`` token ids; converted to ``long``.
    :raises ValueError: naming the field whose shape or dtype is wrong.
    """
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(
            f"MultimodalSample.image must be a uint8 tensor [3, H, W]; got "
            f"{_describe(image)}"
        )
    if (
        not isinstance(input_ids, torch.Tensor)
        or input_ids.ndim != 1
        or input_ids.dtype.is_floating_point
        or input_ids.dtype == torch.bool
    ):
        raise ValueError(
            f"MultimodalSample.input_ids must be an integer tensor [T]; got {_describe(input_ids)}"
        )
    return MultimodalSample(image=image, input_ids=input_ids.long(), batch_size=[])


def validate_sample(
    sample: MultimodalSample, image_size: int | tuple[int, int], context_length: int
) -> None:
    """Check that a (batched or unbatched) sample fits a model.

    :param image_size: the model's input resolution, ``S`` or ``(H, W)``.
    :param context_length: the model's text context length ``T``.
    :raises TypeError: if ``sample`` is not a :class:`MultimodalSample`.
    :raises ValueError: naming the field whose shape or dtype does not fit.
    """
    if not isinstance(sample, MultimodalSample):
        raise TypeError(
            f"expected a MultimodalSample (see avalanche_exmask.data.sample); got {type(sample).__name__}"
        )
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    image, ids = sample.image, sample.input_ids
    if image.dtype != torch.uint8 or tuple(image.shape[-3:]) != (3, height, width):
        raise ValueError(
            f"MultimodalSample.image must be uint8 [..., 3, {height}, {width}] for this model; "
            f"got {_describe(image)}"
        )
    if ids.dtype != torch.long or ids.shape[-1] != context_length:
        raise ValueError(
            f"MultimodalSample.input_ids must be long [..., {context_length}] for this model; "
            f"got {_describe(ids)}"
        )


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {list(value.shape)}"
    return type(value).__name__
