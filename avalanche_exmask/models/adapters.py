"""Parameter-efficient adapters for open_clip models: SSF (default), LoRA and IA3 through peft.

All adapters freeze the CLIP model and expose the same affordances through
:class:`Adapter`: which parameters train, a trainable-parameter report, save/load of the adapter
alone and merging into the base weights.

peft notes (0.21): LoRA supports ``nn.MultiheadAttention`` only when the whole attention module
is targeted (``attn``): LoRA or IA3 on ``attn.out_proj`` alone does nothing, because
``nn.MultiheadAttention`` reads ``out_proj.weight`` directly instead of calling the module.
So LoRA targets ``attn`` and the MLP linears; IA3 targets the MLP linears.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from avalanche_exmask.models.ssf import SSFAdapter, SSFConfig

__all__ = ["Adapter", "build_adapter", "ADAPTER_NAMES"]

ADAPTER_NAMES = ("ssf", "lora", "ia3", "none")


class Adapter(nn.Module):
    """A uniform handle on the adapter injected into a CLIP model.

    :param kind: ``"ssf"``, ``"lora"``, ``"ia3"`` or ``"none"`` (frozen CLIP, head only).
    :param model: the CLIP model the adapter lives in (not registered as a submodule).
    :param ssf: the :class:`SSFAdapter` when ``kind == "ssf"``.
    """

    def __init__(self, kind: str, model: nn.Module, ssf: SSFAdapter | None = None) -> None:
        super().__init__()
        self.kind = kind
        self._model = [model]
        self.ssf = ssf

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The adapter's trainable parameters (empty for ``"none"``)."""
        if self.ssf is not None:
            return list(self.ssf.parameters())
        return [p for p in self._model[0].parameters() if p.requires_grad]

    def num_parameters(self) -> int:
        """Number of adapter parameters (elements)."""
        return sum(p.numel() for p in self.trainable_parameters())

    def state_dict_of_adapter(self) -> dict[str, torch.Tensor]:
        """Only the adapter's tensors."""
        if self.ssf is not None:
            return self.ssf.adapter_state_dict()
        if self.kind == "none":
            return {}
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self._model[0]).items()}

    def load_state_dict_of_adapter(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`state_dict_of_adapter` returned."""
        if self.ssf is not None:
            self.ssf.load_adapter_state_dict(state_dict)
        elif self.kind != "none":
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(self._model[0], state_dict)
            unexpected = getattr(result, "unexpected_keys", [])
            if unexpected:
                raise ValueError(f"{self.kind} adapter state dict has unexpected keys {unexpected[:5]}")

    def save(self, path: str | os.PathLike) -> None:
        """Save the adapter alone (safetensors)."""
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.state_dict_of_adapter().items()}, os.fspath(path))

    def load(self, path: str | os.PathLike) -> None:
        """Load an adapter saved by :meth:`save`."""
        from safetensors.torch import load_file

        self.load_state_dict_of_adapter(load_file(os.fspath(path)))

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """While active, the model computes as the pretrained CLIP model, without the adapter.

        SSF: every ``gamma`` set to 1 and ``beta`` to 0 (the identity), restored on exit; peft
        adapters: peft's own ``enable_adapters(False)`` on every tuner layer; ``"none"``: no change.
        A merged adapter cannot be disabled (its weights are folded in): :meth:`merge` empties it.
        """
        if self.ssf is not None:
            saved = self.ssf.adapter_state_dict()
            identity = {key: torch.ones_like(v) if key.endswith(".gamma") else torch.zeros_like(v) for key, v in saved.items()}
            self.ssf.load_adapter_state_dict(identity)
            try:
                yield
            finally:
                self.ssf.load_adapter_state_dict(saved)
            return
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in self._model[0].modules() if isinstance(m, BaseTunerLayer)]
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)

    def merge(self) -> None:
        """Fold the adapter into the CLIP weights (same outputs, no adapter overhead)."""
        if self.ssf is not None:
            self.ssf.merge()
            return
        if self.kind == "none":
            return
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in self._model[0].modules():
            if isinstance(module, BaseTunerLayer):
                module.merge()


def _peft_config(kind: str):
    from peft import IA3Config, LoraConfig

    if kind == "lora":
        return LoraConfig(r=8, lora_alpha=16, target_modules=["attn", "c_fc", "c_proj"])
    return IA3Config(target_modules=["c_fc", "c_proj"], feedforward_modules=["c_proj"])


def build_adapter(model: nn.Module, adapter: str | SSFConfig | object = "ssf") -> Adapter:
    """Freeze ``model`` and inject an adapter into it.

    :param adapter: ``"ssf"`` (default targets), an :class:`SSFConfig`, ``"lora"``, ``"ia3"``,
        ``"none"``, or a peft config object (``LoraConfig``, ``IA3Config``, ...) used as given.
    :raises ValueError: for an unknown adapter name.
    """
    model.requires_grad_(False)
    if isinstance(adapter, SSFConfig) or adapter == "ssf":
        config = adapter if isinstance(adapter, SSFConfig) else SSFConfig()
        return Adapter("ssf", model, SSFAdapter.inject(model, config))
    if adapter == "none":
        return Adapter("none", model)
    if isinstance(adapter, str) and adapter not in ADAPTER_NAMES:
        raise ValueError(f"unknown adapter {adapter!r}; choose one of {ADAPTER_NAMES} or pass a peft config")
    from peft import inject_adapter_in_model

    peft_config = _peft_config(adapter) if isinstance(adapter, str) else adapter
    inject_adapter_in_model(peft_config, model)
    kind = adapter if isinstance(adapter, str) else type(peft_config).__name__.removesuffix("Config").lower()
    return Adapter(kind, model)
