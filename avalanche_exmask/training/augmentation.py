"""Multimodal augmentation of replayed (masked) exemplars.

Replaying masked exemplars alone gives a narrow, shifted distribution. Each operation below
combines an exemplar with a *partner*, another stored exemplar of the same class drawn at random,
and is applied with its own probability when the buffer decodes a record for replay:

* **fill** (``p_fill``): the exemplar's discarded patches take the partner's pixels there (the
  partner's own discarded patches are as it decodes them, so patches discarded in both keep the
  partner's stored background). Only records with a keep mask (:attr:`Record.keep_mask`) have
  discarded patches; for other codecs it does nothing.
* **swap text** (``p_swap_text``): the exemplar's image is paired with the partner's text.
* **token mix** (``p_token_mix``, drawn only when the text was not swapped): the two texts' content
  tokens are riffle-merged (each text keeps its own order, the interleaving is random), truncated to
  the context length, between the exemplar's start and end tokens.

With no partner (a class with one exemplar) the exemplar is returned as decoded.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from avalanche_exmask.data.sample import MultimodalSample, make_sample
from avalanche_exmask.masking.text_mask import real_token_mask, special_token_mask
from avalanche_exmask.storage.codecs.base import Record

__all__ = ["fill_patches", "mix_tokens", "MultimodalAugmentation"]


def fill_patches(image: torch.Tensor, keep: torch.Tensor, donor: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``image`` where its patch is kept, ``donor`` elsewhere.

    :param image: uint8 ``[3, H, W]``.
    :param keep: bool ``[N]``, row-major over ``grid = (rows, cols)``.
    :param donor: uint8 ``[3, H, W]``.
    :return: uint8 ``[3, H, W]``.
    """
    rows, cols = grid
    _, height, width = image.shape
    pixels = keep.reshape(rows, cols).repeat_interleave(height // rows, 0).repeat_interleave(width // cols, 1)
    return torch.where(pixels, image, donor)


def mix_tokens(ids: torch.Tensor, other: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Riffle-merge the content tokens of two texts between the start and end tokens of ``ids``.

    :param ids: long ``[T]``, zero-padded, with start and end tokens.
    :param other: long ``[T']``.
    :return: long ``[T]``: start, merged content (truncated to ``T - 2``), end, padding.
    """
    content = real_token_mask(ids) & ~special_token_mask(ids)
    other_content = real_token_mask(other) & ~special_token_mask(other)
    first, second = ids[content], other[other_content]
    from_second = torch.zeros(len(first) + len(second), dtype=torch.bool)
    from_second[torch.randperm(len(from_second), generator=generator)[: len(second)]] = True
    merged = torch.empty(len(from_second), dtype=torch.long)
    merged[~from_second], merged[from_second] = first, second
    start, end = ids[real_token_mask(ids)][0], ids.max()
    body = merged[: ids.shape[-1] - 2]
    result = torch.zeros_like(ids)
    result[: len(body) + 2] = torch.cat([start.reshape(1), body, end.reshape(1)])
    return result


class MultimodalAugmentation:
    """Combine a replayed exemplar with another of its class (see the module docstring).

    :param p_fill: probability of filling discarded patches from the partner.
    :param p_token_mix: probability of mixing the two texts' tokens.
    :param p_swap_text: probability of taking the partner's text.
    :param seed: seeds a private generator (every DataLoader worker then repeats the same draws);
        ``None`` uses torch's global RNG, which DataLoader seeds per worker.
    """

    def __init__(
        self, *, p_fill: float = 0.0, p_token_mix: float = 0.0, p_swap_text: float = 0.0, seed: int | None = None
    ) -> None:
        for name, value in (("p_fill", p_fill), ("p_token_mix", p_token_mix), ("p_swap_text", p_swap_text)):
            if not 0 <= value <= 1:
                raise ValueError(f"MultimodalAugmentation.{name} must be in [0, 1]; got {value}")
        self.p_fill = p_fill
        self.p_token_mix = p_token_mix
        self.p_swap_text = p_swap_text
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __call__(
        self, record: Record, class_records: Sequence[Record], decode: Callable[[Record], MultimodalSample]
    ) -> MultimodalSample:
        """Decode ``record``, augmented with a random partner from ``class_records`` (same class)."""
        sample = decode(record)
        partners = [other for other in class_records if other is not record]
        if not partners:
            return sample
        partner = partners[int(torch.randint(len(partners), (1,), generator=self._generator))]
        keep = record.keep_mask
        fill = keep is not None and self._draw(self.p_fill)
        swap = self._draw(self.p_swap_text)
        mix = not swap and self._draw(self.p_token_mix)
        if not (fill or swap or mix):
            return sample
        other = decode(partner)
        image, ids = sample.image, sample.input_ids
        if fill:
            assert keep is not None  # fill is drawn only for a record with a keep mask
            grid = record.patch_grid
            if grid is None:
                raise ValueError(f"{type(record).__name__} has a keep mask but no patch grid")
            image = fill_patches(image, keep, other.image, grid)
        if swap:
            ids = other.input_ids
        elif mix:
            ids = mix_tokens(ids, other.input_ids, self._generator)
        return make_sample(image, ids)

    @property
    def generator(self) -> torch.Generator | None:
        """The private generator (``None`` when drawing from torch's global RNG)."""
        return self._generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"generator": uint8 state}`` of the private generator; empty when drawing from torch's global RNG."""
        return {} if self._generator is None else {"generator": self._generator.get_state()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`'s output.

        :raises ValueError: if ``state`` has a generator state and this augmentation has no
            private generator, or the other way round.
        """
        if set(state) != set(self.state_dict()):
            raise ValueError(f"augmentation state has {sorted(state)}; this augmentation {sorted(self.state_dict())}")
        if self._generator is not None:
            self._generator.set_state(state["generator"])

    def _draw(self, probability: float) -> bool:
        return probability > 0 and bool(torch.rand(1, generator=self._generator) < probability)

    def __repr__(self) -> str:
        return (
            f"MultimodalAugmentation(p_fill={self.p_fill}, p_token_mix={self.p_token_mix}, "
            f"p_swap_text={self.p_swap_text})"
        )
