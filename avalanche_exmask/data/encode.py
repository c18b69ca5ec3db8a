"""Turn a PIL image and a text into a :class:`MultimodalSample` for a given model.

Images are converted to RGB, resized (shorter side to the model's resolution, bicubic,
antialiased) and centre-cropped, and kept as ``uint8``: normalisation happens inside the
model, so a stored exemplar is exactly what the model saw. Texts go through open_clip's
tokenizer for the model (padded / truncated to its context length).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision.transforms import v2

from avalanche_exmask.data.sample import MultimodalSample, make_sample

__all__ = ["SampleEncoder"]


class SampleEncoder:
    """Encode ``(PIL image, text)`` into a :class:`MultimodalSample`.

    :param image_size: the model's square input resolution ``S`` in pixels.
    :param tokenizer: an open_clip tokenizer (``open_clip.get_tokenizer(name)``): called on a list
        of strings it returns ``long [N, T]``.
    :param context_length: ``T``, the model's text context length.
    """

    def __init__(self, image_size: int, tokenizer: Callable, context_length: int) -> None:
        self.image_size = image_size
        self.tokenizer = tokenizer
        self.context_length = context_length
        self._image_transform = v2.Compose(
            [
                v2.PILToTensor(),
                v2.Resize(image_size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                v2.CenterCrop(image_size),
            ]
        )

    @classmethod
    def for_model(cls, model_name: str) -> SampleEncoder:
        """The encoder for an open_clip model name (including this package's tiny configs).

        open_clip is imported here, on first use, not when this module is imported.
        """
        from avalanche_exmask.data.model_inputs import get_tokenizer, model_geometry

        image_size, context_length = model_geometry(model_name)
        return cls(image_size, get_tokenizer(model_name), context_length)

    def encode_image(self, image: Image.Image) -> torch.Tensor:
        """``uint8 [3, S, S]`` from any PIL image (converted to RGB)."""
        return self._image_transform(image.convert("RGB"))

    def token_count(self, text: str) -> int:
        """Number of tokens of ``text`` including start and end tokens, before truncation."""
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None:
            raise TypeError("token_count needs a tokenizer with an `encode` method (open_clip's SimpleTokenizer)")
        return len(encode(text)) + 2

    def is_truncated(self, text: str) -> bool:
        """Whether ``text`` exceeds the context length (and so is truncated by :meth:`encode_text`)."""
        return self.token_count(text) > self.context_length

    def encode_text(self, text: str) -> torch.Tensor:
        """``long [T]`` token ids, padded with 0 or truncated to the context length."""
        return self.tokenizer([text])[0].long()

    def __call__(self, image: Image.Image, text: str) -> MultimodalSample:
        return make_sample(self.encode_image(image), self.encode_text(text))
