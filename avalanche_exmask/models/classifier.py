"""The multimodal classifier: an adapted open_clip model feeding a growing linear head."""
from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import torch.nn.functional as F
from avalanche.models import IncrementalClassifier
from torch import nn

from avalanche_exmask.data.sample import MultimodalSample, validate_sample
from avalanche_exmask.models.adapters import Adapter, build_adapter
from avalanche_exmask.models.attention import AttentionRecorder, attention_rollout, block_attention_module
from avalanche_exmask.models.factory import create_clip
from avalanche_exmask.models.outputs import MaskingScores
from avalanche_exmask.models.ssf import SSFConfig

__all__ = ["MultimodalCLIPClassifier", "FUSIONS", "EMPTY_PATCH_MODES"]


class _AttentionRecorded(Exception):
    """Raised by :func:`_stop_before` to end a forward pass whose remaining work is not needed."""


@contextlib.contextmanager
def _stop_before(module: nn.Module):
    """While active, ``module``'s forward raises :class:`_AttentionRecorded` before it runs (its
    earlier forward pre-hooks have run)."""

    def stop(_module: nn.Module, _args: Any, _kwargs: Any) -> None:
        raise _AttentionRecorded

    handle = module.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()

#: How image and text embeddings (each ``[B, E]``, L2-normalised) become the head's input.
FUSIONS = ("concat", "sum", "image", "text")

#: Values of ``skip_empty_patches`` (``True`` means ``"attention_mask"``).
EMPTY_PATCH_MODES = (False, True, "attention_mask", "drop")
MASK_SCORE_SOURCES = ("adapted", "pretrained")


class MultimodalCLIPClassifier(nn.Module):
    """An open_clip model, frozen and adapted (SSF by default), with an incremental linear head.

    The input is a batched :class:`MultimodalSample` (``image`` uint8 ``[B, 3, S, S]``,
    ``input_ids`` long ``[B, T]``); normalisation happens here with the model's own mean/std.
    The head is Avalanche's ``IncrementalClassifier``: it grows when an experience brings new
    classes (Avalanche calls ``adaptation`` on it through the strategy).

    :param model_name: an open_clip model name (``open_clip.list_models()``), e.g. ``"ViT-B-16"``;
        default: this package's ``exmask-tiny``.
    :param pretrained: an open_clip tag, a local weights file, or ``None``; see
        :func:`avalanche_exmask.models.factory.create_clip`.
    :param adapter: ``"ssf"`` (default), an ``SSFConfig``, ``"lora"``, ``"ia3"``, ``"none"`` or
        a peft config.
    :param fusion: one of :data:`FUSIONS`; ``"concat"`` gives ``F = 2E``.
    :param initial_out_features: initial number of classes of the head.
    :param image_attention: where the [CLS]->patch scores for the image mask come from:
        ``"last"`` (the paper: the image tower's last block), a block index (e.g. ``0``), or
        ``"rollout"`` (attention rollout over all blocks, Abnar & Zuidema 2020), a remedy for
        models whose last-block [CLS] attention sits on background "register" tokens.
    :param skip_empty_patches: what the image tower does with patches whose pixels are all
        exactly 0 (what a masked exemplar's discarded patches decode to with
        ``background_downsample=None``); one of :data:`EMPTY_PATCH_MODES`. ``False`` (default) feeds
        the black pixels like any others. ``True`` or ``"attention_mask"``: they stay in the token
        sequence but no token attends to them, so a masked exemplar is seen as its kept patches
        alone (the cost is unchanged). ``"drop"``: token-dropping replay: they are removed from the
        sequence after the positional embeddings are added (kept patches keep their positions, as
        in open_clip's ``PatchDropout``), so the image tower costs about the kept fraction of its
        FLOPs. The pooled output equals ``"attention_mask"``'s up to float rounding; see
        :meth:`_dropping_empty_patches` for how a batch is split. :meth:`masking_scores` always
        uses the attention mask (its outputs are per patch).
    :param mask_scores_from: which model scores the image mask (:meth:`masking_scores`'s
        ``patch_attention``): ``"adapted"`` (the model as trained so far) or ``"pretrained"`` (the
        same weights with the adapter disabled; one more image-tower pass). The paper does not say.
    """

    # open_clip's CLIP or CustomTextCLIP (open_clip is read as Any): their towers' submodules differ
    # by model and are read by duck typing.
    clip: Any
    pixel_mean: torch.Tensor  # buffer, float [1, 3, 1, 1]
    pixel_std: torch.Tensor  # buffer, float [1, 3, 1, 1]

    def __init__(
        self,
        model_name: str = "exmask-tiny",
        pretrained: str | os.PathLike | None = "synthetic",
        *,
        adapter: str | SSFConfig | object = "ssf",
        fusion: str = "concat",
        initial_out_features: int = 2,
        image_attention: str | int = "last",
        skip_empty_patches: bool | str = False,
        mask_scores_from: str = "adapted",
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}; got {fusion!r}")
        if not (image_attention in ("last", "rollout") or isinstance(image_attention, int)):
            raise ValueError(f"image_attention must be 'last', 'rollout' or a block index; got {image_attention!r}")
        if not any(skip_empty_patches is mode or (isinstance(mode, str) and skip_empty_patches == mode) for mode in EMPTY_PATCH_MODES):
            raise ValueError(f"skip_empty_patches must be one of {EMPTY_PATCH_MODES}; got {skip_empty_patches!r}")
        if mask_scores_from not in MASK_SCORE_SOURCES:
            raise ValueError(f"mask_scores_from must be one of {MASK_SCORE_SOURCES}; got {mask_scores_from!r}")
        self.image_attention = image_attention
        self.skip_empty_patches = skip_empty_patches
        self.mask_scores_from = mask_scores_from
        self.model_name = model_name
        self.clip = create_clip(model_name, pretrained)
        self.adapter: Adapter = build_adapter(self.clip, adapter)
        self.fusion = fusion
        visual = self.clip.visual
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        patch = visual.patch_size
        self.patch_size = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        self.context_length = int(self.clip.context_length)
        self.embed_dim = int(visual.output_dim)
        preprocess = getattr(visual, "preprocess_cfg", {})
        mean = preprocess.get("mean", (0.48145466, 0.4578275, 0.40821073))
        std = preprocess.get("std", (0.26862954, 0.26130258, 0.27577711))
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.classifier = IncrementalClassifier(self.fused_dim, initial_out_features=initial_out_features)
        if skip_empty_patches and not isinstance(getattr(visual, "patch_dropout", nn.Identity()), nn.Identity):
            raise ValueError("skip_empty_patches needs a model without patch dropout")
        blocks = len(visual.transformer.resblocks)
        if isinstance(image_attention, int) and not -blocks <= image_attention < blocks:
            raise ValueError(f"image_attention block index {image_attention} out of range for {blocks} blocks")

    @property
    def fused_dim(self) -> int:
        """``F``, the width of the fused embedding fed to the head."""
        return 2 * self.embed_dim if self.fusion == "concat" else self.embed_dim

    @property
    def num_patches(self) -> int:
        """``N = (S / P)^2``, patches per image."""
        return (self.image_size // self.patch_size) ** 2

    def normalize_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 3, S, S]`` -> float ``[B, 3, S, S]`` normalised with the model's mean/std."""
        return (images.float() / 255.0 - self.pixel_mean) / self.pixel_std

    def _text_modules(self) -> tuple[nn.Module, nn.Module, nn.Linear | torch.Tensor | None]:
        """(transformer, final norm, projection) of the text tower (CLIP or CustomTextCLIP)."""
        tower = getattr(self.clip, "text", self.clip)
        return tower.transformer, tower.ln_final, tower.text_projection

    def _fuse(self, image_embedding: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        image_embedding = F.normalize(image_embedding, dim=-1)
        text_embedding = F.normalize(text_embedding, dim=-1)
        if self.fusion == "concat":
            return torch.cat([image_embedding, text_embedding], dim=-1)
        if self.fusion == "sum":
            return image_embedding + text_embedding
        return image_embedding if self.fusion == "image" else text_embedding

    def empty_patches(self, images: torch.Tensor) -> torch.Tensor:
        """bool ``[B, N]``: which patches of uint8 ``[B, 3, S, S]`` images are all exactly 0."""
        batch, grid, patch = images.shape[0], self.image_size // self.patch_size, self.patch_size
        blocks = images.reshape(batch, 3, grid, patch, grid, patch)
        return (blocks == 0).all(dim=5).all(dim=3).all(dim=1).reshape(batch, grid * grid)

    @contextlib.contextmanager
    def _skipping_empty_patches(self, images: torch.Tensor):
        """While active, the image transformer's attention ignores the empty patches of ``images``."""
        empty = self.empty_patches(images) if self.skip_empty_patches else None
        if empty is None or not bool(empty.any()):
            yield
            return
        handle = self._ignore_image_keys(empty)
        try:
            yield
        finally:
            handle.remove()

    def _ignore_image_keys(self, ignored: torch.Tensor) -> torch.utils.hooks.RemovableHandle:
        """Make the image transformer's attention ignore, as keys, the tokens where ``ignored`` (bool
        ``[B, L]``, one per token after [CLS]) is true ([CLS] is never ignored): a pre-hook that passes
        an additive ``-inf`` mask ``[B x heads, 1 + L, 1 + L]``. Returns the hook's handle."""
        heads = self.clip.visual.transformer.resblocks[0].attn.num_heads
        keys = torch.cat([torch.zeros_like(ignored[:, :1]), ignored], dim=1)  # [B, 1 + L]
        additive = torch.zeros(keys.shape, dtype=torch.float32, device=ignored.device).masked_fill(keys, float("-inf"))
        length = keys.shape[1]
        mask = additive[:, None, None, :].expand(-1, heads, length, -1).reshape(-1, length, length)

        def add_mask(_module, args, kwargs):
            kwargs["attn_mask"] = mask.to(args[0].dtype)
            return args, kwargs

        return self.clip.visual.transformer.register_forward_pre_hook(add_mask, with_kwargs=True)

    @contextlib.contextmanager
    def _dropping_empty_patches(self, images: torch.Tensor):
        """While active, the empty patches of ``images`` (uint8 ``[B, 3, S, S]``, every one with at
        least one empty patch) are removed from the image tower's token sequence.

        A forward hook on the tower's ``patch_dropout`` (the point where open_clip drops tokens,
        after the positional embeddings) gathers [CLS] and each image's kept patch tokens, in grid
        order, into ``[B, 1 + K, D]`` with ``K`` the largest kept count of the batch. Images with
        fewer kept patches are padded, and the padding is masked out of the attention as keys
        (padded positions are computed and ignored: the batch costs ``(1 + K) / (1 + N)`` of the
        full tower, not the mean kept fraction).
        """
        empty = self.empty_patches(images)  # [B, N]
        kept_counts = (~empty).sum(dim=1)  # [B]
        longest = int(kept_counts.max())
        order = torch.argsort(empty.to(torch.int8), dim=1, stable=True)[:, :longest]  # kept first, grid order
        padding = torch.arange(longest, device=images.device)[None, :] >= kept_counts[:, None]  # [B, K]

        def gather_kept(_module, _args, tokens):
            index = order[:, :, None].expand(-1, -1, tokens.shape[-1])
            return torch.cat([tokens[:, :1], tokens[:, 1:].gather(1, index)], dim=1)

        handles = [self.clip.visual.patch_dropout.register_forward_hook(gather_kept)]
        if bool(padding.any()):
            handles.append(self._ignore_image_keys(padding))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image embedding ``[B, E]`` (not normalised) of uint8 ``[B, 3, S, S]`` images, with the
        model's handling of empty patches (``skip_empty_patches``).

        With ``"drop"``, the batch is split: images without an empty patch go through the tower
        as they are, the others with their empty patches dropped (:meth:`_dropping_empty_patches`),
        and the rows are put back in batch order.
        """
        pixels = self.normalize_images(images)
        if self.skip_empty_patches != "drop":
            with self._skipping_empty_patches(images):
                return self.clip.encode_image(pixels)
        has_empty = self.empty_patches(images).any(dim=1)
        if not bool(has_empty.any()):
            return self.clip.encode_image(pixels)
        rows = torch.nonzero(has_empty).flatten()
        with self._dropping_empty_patches(images[rows]):
            dropped = self.clip.encode_image(pixels[rows])
        if bool(has_empty.all()):
            return dropped
        full_rows = torch.nonzero(~has_empty).flatten()
        full = self.clip.encode_image(pixels[full_rows])
        out = torch.empty((images.shape[0], full.shape[-1]), dtype=full.dtype, device=full.device)
        out[rows] = dropped.to(full.dtype)
        out[full_rows] = full
        return out

    def embed(self, x: MultimodalSample) -> torch.Tensor:
        """Fused embedding ``[B, F]`` of a batch."""
        validate_sample(x, self.image_size, self.context_length)
        image_embedding = self.encode_image(x.image)
        text_embedding = self.clip.encode_text(x.input_ids)
        return self._fuse(image_embedding, text_embedding)

    def forward(self, x: MultimodalSample) -> torch.Tensor:
        """Logits ``[B, C]`` over all classes seen so far."""
        return self.classifier(self.embed(x))

    def masking_scores(self, x: MultimodalSample, *, token_importance: bool = False) -> MaskingScores:
        """Everything exemplar selection and masking need, from ONE forward pass of a batch.

        :param token_importance: also compute :meth:`token_importance` (one more text-tower pass
            per content token: about ``T`` times the text tower's cost).
        :return: batched :class:`MaskingScores`: fused embedding ``[B, F]``, [CLS]->patch
            attention ``[B, N]``, pooled-token->token attention ``[B, T]``, projected and
            L2-normalised patch features ``[B, N, E]`` and token features ``[B, T, E]`` (and the
            token importance ``[B, T]`` when asked for), and the class activation map ``[B, N]``.
            With ``mask_scores_from="pretrained"`` the [CLS] -> patch attention comes from a second
            image pass with the adapter disabled (the pretrained model, before any adaptation);
            everything else from the adapted model.
        """
        validate_sample(x, self.image_size, self.context_length)
        visual = self.clip.visual
        text_transformer, ln_final, text_projection = self._text_modules()
        captured: dict[str, torch.Tensor] = {}
        norm_hook = ln_final.register_forward_hook(lambda _m, _i, out: captured.__setitem__("tokens", out))
        try:
            image_embedding, patch_tokens, cls_attention = self._image_pass(x.image)
            assert image_embedding is not None and patch_tokens is not None  # a whole pass
            with AttentionRecorder(block_attention_module(text_transformer, -1)) as text_attention:
                text_embedding = self.clip.encode_text(x.input_ids)
        finally:
            norm_hook.remove()
        if self.mask_scores_from == "pretrained":
            with self.adapter.disabled():
                cls_attention = self._image_pass(x.image, attention_only=True)[2]
        patch_features = patch_tokens @ visual.proj if visual.proj is not None else patch_tokens
        token_features = captured["tokens"]
        if isinstance(text_projection, nn.Linear):
            token_features = text_projection(token_features)
        elif text_projection is not None:
            token_features = token_features @ text_projection
        pooled_index = x.input_ids.argmax(dim=-1)  # CLIP pools at the end-of-text token
        rows = torch.arange(x.input_ids.shape[0], device=pooled_index.device)
        fused = self._fuse(image_embedding, text_embedding)
        patch_features = F.normalize(patch_features, dim=-1)
        return MaskingScores(
            embedding=fused,
            patch_attention=cls_attention,
            token_attention=text_attention.recorded()[rows, pooled_index],
            class_activation=self._class_activation(fused, patch_features),
            patch_features=patch_features,
            token_features=F.normalize(token_features, dim=-1),
            token_importance=self.token_importance(x.input_ids) if token_importance else None,
            batch_size=[x.input_ids.shape[0]],
        )

    def patch_attention_scores(self, images: torch.Tensor) -> torch.Tensor:
        """The [CLS] -> patch attention ``[B, N]`` of uint8 ``[B, 3, S, S]`` images alone: the same
        values as :meth:`masking_scores`' ``patch_attention`` for the same batch, at a fraction of
        its cost. The image tower runs until the attention of the last block it records has been
        recorded; that block's attention output and MLP, the later blocks, the final norm and
        projection, and the whole text tower are skipped. For a codec whose records depend on the
        patch attention alone (:attr:`MaskedCodec.reads_patch_attention_only`). A subclass that
        changes :meth:`masking_scores`' patch attention must change this method too.
        """
        if self.mask_scores_from == "pretrained":
            with self.adapter.disabled():
                return self._image_pass(images, attention_only=True)[2]
        return self._image_pass(images, attention_only=True)[2]

    def _image_pass(
        self, images: torch.Tensor, *, attention_only: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """One image-tower pass of uint8 ``[B, 3, S, S]`` images recording the attention of
        ``image_attention``'s blocks (empty patches handled as ``skip_empty_patches`` says).

        :param attention_only: stop the pass once the last recorded block's attention is recorded
            (embedding and patch tokens are then ``None``).
        :return: image embedding ``[B, E]``, patch tokens ``[B, N, W]`` (after the final norm,
            before the projection) and the [CLS] -> patch attention ``[B, N]``.
        """
        visual = self.clip.visual
        output_tokens = visual.output_tokens
        image_embedding = patch_tokens = None
        try:
            visual.output_tokens = True
            with contextlib.ExitStack() as stack:
                stack.enter_context(self._skipping_empty_patches(images))
                recorders = [
                    stack.enter_context(AttentionRecorder(block_attention_module(visual.transformer, index)))
                    for index in self._image_attention_blocks()
                ]
                if attention_only:  # registered after the recorders' hooks, so it runs after them
                    stack.enter_context(_stop_before(recorders[-1].attn))
                with contextlib.suppress(_AttentionRecorded):
                    image_embedding, patch_tokens = visual(self.normalize_images(images))
        finally:
            visual.output_tokens = output_tokens
        if self.image_attention == "rollout":
            cls_attention = attention_rollout([r.recorded() for r in recorders])[:, 0, 1:]
        else:
            cls_attention = recorders[0].recorded()[:, 0, 1:]
        return image_embedding, patch_tokens, cls_attention

    def _class_activation(self, fused: torch.Tensor, patch_features: torch.Tensor) -> torch.Tensor:
        """The class activation map of each sample's predicted class.

        :param fused: float ``[B, F]``, the fused embeddings (the head's input).
        :param patch_features: float ``[B, N, E]``, projected and L2-normalised patch features.
        :return: float ``[B, N]``: ``w_c . f_n`` for the predicted class ``c`` (the head's argmax
            over its active classes), ``w_c`` the head's row restricted to the image part of the
            fused embedding (the first ``E`` columns under ``concat`` fusion, all of them otherwise).
        """
        predicted = self.classifier(fused).argmax(dim=-1)
        weights = self.classifier.classifier.weight[predicted]  # [B, F]
        image_weights = weights[:, : self.embed_dim] if self.fusion == "concat" else weights
        return torch.einsum("bne,be->bn", patch_features, image_weights.to(patch_features.dtype))

    @torch.no_grad()
    def token_importance(self, input_ids: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Leave-one-out importance of each token to the text embedding.

        For each content token (real, not start or end), the text is re-encoded without it (the
        following tokens move up one position, as in a stored masked text) and the importance is
        ``1 - cos(e, e_without_token)`` of the L2-normalised text embeddings.

        :param input_ids: long ``[B, T]``, zero-padded.
        :param batch_size: texts per text-tower pass.
        :return: float ``[B, T]``, 0 for start, end and padding tokens.
        """
        from avalanche_exmask.masking.text_mask import real_token_mask, special_token_mask

        full = F.normalize(self.clip.encode_text(input_ids).float(), dim=-1)
        content = real_token_mask(input_ids) & ~special_token_mask(input_ids)
        rows, positions = torch.nonzero(content, as_tuple=True)
        importance = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        for start in range(0, len(rows), batch_size):
            row, position = rows[start : start + batch_size], positions[start : start + batch_size]
            texts = input_ids[row]
            columns = torch.arange(texts.shape[1], device=texts.device).expand_as(texts)
            source = columns + (columns >= position[:, None]).long()  # skip the left-out token
            shortened = torch.where(source < texts.shape[1], texts.gather(1, source.clamp(max=texts.shape[1] - 1)), 0)
            without = F.normalize(self.clip.encode_text(shortened).float(), dim=-1)
            importance[row, position] = 1 - (without * full[row]).sum(dim=-1)
        return importance

    def _image_attention_blocks(self) -> list[int]:
        """Indices of the image blocks whose attention :meth:`masking_scores` records."""
        if self.image_attention == "rollout":
            return list(range(len(self.clip.visual.transformer.resblocks)))
        return [-1 if self.image_attention == "last" else int(self.image_attention)]

    def trainable_parameter_report(self) -> dict[str, int]:
        """Parameter counts (elements): ``adapter``, ``head``, ``trainable``, ``total``."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {
            "adapter": self.adapter.num_parameters(),
            "head": sum(p.numel() for p in self.classifier.parameters()),
            "trainable": trainable,
            "total": sum(p.numel() for p in self.parameters()),
        }
