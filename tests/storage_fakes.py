"""Random samples, masking scores and a tiny model for the masking / storage / augmentation tests."""
from __future__ import annotations

import torch

from avalanche_exmask.data.sample import MultimodalSample, make_sample
from avalanche_exmask.models.outputs import MaskingScores

START, END = 49406, 49407


def random_ids(n_content: int, context_length: int, generator: torch.Generator) -> torch.Tensor:
    """long ``[T]``: start, ``n_content`` random ids, end, zero padding."""
    ids = torch.zeros(context_length, dtype=torch.long)
    content = torch.randint(1, 40000, (n_content,), generator=generator)
    ids[: n_content + 2] = torch.cat([torch.tensor([START]), content, torch.tensor([END])])
    return ids


def random_sample(image_size: int, context_length: int, n_content: int, generator: torch.Generator) -> MultimodalSample:
    image = torch.randint(0, 256, (3, image_size, image_size), dtype=torch.uint8, generator=generator)
    return make_sample(image, random_ids(n_content, context_length, generator))


def random_scores(n_patches: int, context_length: int, generator: torch.Generator, width: int = 8, embed: int = 6) -> MaskingScores:
    """Unbatched scores with softmax-like attention and L2-normalised features."""
    return MaskingScores(
        embedding=torch.randn(embed, generator=generator),
        patch_attention=torch.rand(n_patches, generator=generator).softmax(0),
        token_attention=torch.rand(context_length, generator=generator).softmax(0),
        patch_features=torch.nn.functional.normalize(torch.randn(n_patches, width, generator=generator), dim=-1),
        token_features=torch.nn.functional.normalize(torch.randn(context_length, width, generator=generator), dim=-1),
        batch_size=[],
    )


class TinyMaskingModel(torch.nn.Module):
    """A classifier over ``MultimodalSample`` with a ``masking_scores`` method (patch size ``P``)."""

    def __init__(self, n_classes: int, patch_size: int, width: int = 8) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.patch_proj = torch.nn.Linear(3 * patch_size * patch_size, width)
        self.token_embed = torch.nn.Embedding(49408, width)
        self.head = torch.nn.Linear(2 * width, n_classes)

    def _features(self, x: MultimodalSample) -> tuple[torch.Tensor, torch.Tensor]:
        image = x.image.float() / 255
        b, c, h, w = image.shape
        p = self.patch_size
        patches = image.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
        return self.patch_proj(patches), self.token_embed(x.input_ids)

    def forward(self, x: MultimodalSample) -> torch.Tensor:
        patches, tokens = self._features(x)
        real = (x.input_ids != 0).unsqueeze(-1).float()
        text = (tokens * real).sum(1) / real.sum(1).clamp(min=1)
        return self.head(torch.cat([patches.mean(1), text], dim=-1))

    def masking_scores(self, x: MultimodalSample) -> MaskingScores:
        patches, tokens = self._features(x)
        real = (x.input_ids != 0).unsqueeze(-1).float()
        text = (tokens * real).sum(1) / real.sum(1).clamp(min=1)
        embedding = torch.cat([patches.mean(1), text], dim=-1)
        image_weights = self.head.weight[self.head(embedding).argmax(-1), : patches.shape[-1]]
        return MaskingScores(
            embedding=embedding,
            patch_attention=patches.norm(dim=-1).softmax(-1),
            class_activation=torch.einsum("bnw,bw->bn", patches, image_weights),
            token_attention=(tokens.norm(dim=-1) * real[..., 0]).softmax(-1),
            patch_features=torch.nn.functional.normalize(patches, dim=-1),
            token_features=torch.nn.functional.normalize(tokens, dim=-1),
            batch_size=[x.image.shape[0]],
        )
