"""SSF (Scaling and Shifting your Features, Lian et al., NeurIPS 2022) for open_clip towers.

SSF follows an operation ``y = W x + b`` by a per-output-channel affine map
``y' = gamma * y + beta`` (``gamma`` initialised to 1, ``beta`` to 0). That equals the same
operation with reparametrised weights ``W' = diag(gamma) W`` and ``b' = gamma * b + beta``.
This module implements SSF exactly so, with ``torch.nn.utils.parametrize``: it works for any
layer whose output channels are the first dimension of its weight, including the fused input
projection and the output projection of ``nn.MultiheadAttention`` (whose forward reads the
weights directly, so forward hooks could not scale them), ``nn.Linear``, ``nn.Conv2d`` (patch
embedding) and ``nn.LayerNorm``.

peft 0.21 has no SSF and its method registry accepts only names in its ``PeftType`` enum, so
SSF is a standalone adapter with peft's affordances: a trainable-parameter report, save/load of
the adapter alone, and merging into the base weights.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["SSFConfig", "SSFAdapter", "ScaleShift"]

#: Default targets: patch embedding, attention in/out projections, MLP linears and LayerNorms of
#: both towers. Patterns match the *end* of a module's qualified name.
DEFAULT_SSF_TARGETS: tuple[str, ...] = (
    r"conv1",
    r"attn",
    r"attn\.out_proj",
    r"mlp\.c_fc",
    r"mlp\.c_proj",
    r"ln_\w+",
)


@dataclass(frozen=True)
class SSFConfig:
    """Which layers get SSF.

    :param target_modules: regular expressions matched against the end of each module's
        qualified name (``re.search(pattern + "$", name)``).
    :param init_scale: initial ``gamma`` (the method: 1).
    :param init_shift: initial ``beta`` (the method: 0).
    """

    target_modules: Sequence[str] = field(default_factory=lambda: DEFAULT_SSF_TARGETS)
    init_scale: float = 1.0
    init_shift: float = 0.0


class ScaleShift(nn.Module):
    """The SSF parameters of one layer: ``gamma`` and ``beta``, each ``[C_out]``."""

    def __init__(self, channels: int, init_scale: float = 1.0, init_shift: float = 0.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), float(init_scale)))
        self.beta = nn.Parameter(torch.full((channels,), float(init_shift)))


class _ScaledWeight(nn.Module):
    """Parametrisation ``W -> diag(gamma) W`` over the first (output-channel) dimension.

    The :class:`ScaleShift` is held in a list, not registered as a submodule: its parameters are
    owned by the :class:`SSFAdapter`, so each appears once in ``parameters()`` and
    ``state_dict()``. ``copy.deepcopy`` of a model holding both keeps them linked (deepcopy's memo).
    """

    def __init__(self, scale_shift: ScaleShift) -> None:
        super().__init__()
        self._ssf = [scale_shift]

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        gamma = self._ssf[0].gamma
        return weight * gamma.view(-1, *([1] * (weight.ndim - 1))).to(weight.dtype)


class _ScaledShiftedBias(nn.Module):
    """Parametrisation ``b -> gamma * b + beta``."""

    def __init__(self, scale_shift: ScaleShift) -> None:
        super().__init__()
        self._ssf = [scale_shift]

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        ssf = self._ssf[0]
        return bias * ssf.gamma.to(bias.dtype) + ssf.beta.to(bias.dtype)


def _weight_and_bias_names(module: nn.Module) -> tuple[str, str] | None:
    """The (weight, bias) attribute names SSF reparametrises on ``module``, or None."""
    if isinstance(module, nn.MultiheadAttention):
        if not module._qkv_same_embed_dim:
            raise ValueError("SSF supports nn.MultiheadAttention with a fused in_proj_weight only")
        return "in_proj_weight", "in_proj_bias"
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.LayerNorm)):
        return "weight", "bias"
    return None


class SSFAdapter(nn.Module):
    """SSF injected into a model.

    Build it with :meth:`inject`; it owns all ``gamma``/``beta`` parameters (in ``scale_shifts``,
    keyed by the target's qualified name with ``.`` replaced by ``__``), and the base model's
    layers read their reparametrised weights through them.

    Example::

        adapter = SSFAdapter.inject(clip_model)      # freezes the base model
        adapter.trainable_parameter_report(clip_model)
        adapter.save("ssf.safetensors"); adapter.merge()
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale_shifts = nn.ModuleDict()
        self._targets: dict[str, tuple[nn.Module, str, str]] = {}

    @classmethod
    def inject(cls, model: nn.Module, config: SSFConfig | None = None, *, freeze_base: bool = True) -> SSFAdapter:
        """Add SSF to every layer of ``model`` whose name matches ``config.target_modules``.

        :param freeze_base: set ``requires_grad=False`` on all of the model's own parameters.
        :raises ValueError: if no layer matches.
        """
        config = config or SSFConfig()
        patterns = [re.compile(f"(^|\\.)(?:{p})$") for p in config.target_modules]
        adapter = cls()
        if freeze_base:
            model.requires_grad_(False)
        for name, module in list(model.named_modules()):
            if not name or not any(p.search(name) for p in patterns):
                continue
            names = _weight_and_bias_names(module)
            if names is None:
                continue
            weight_name, bias_name = names
            weight = getattr(module, weight_name)
            if getattr(module, bias_name) is None:
                # A bias-free layer (e.g. CLIP's patch embedding) gets a frozen zero bias to shift.
                setattr(module, bias_name, nn.Parameter(weight.new_zeros(weight.shape[0]), requires_grad=False))
            scale_shift = ScaleShift(weight.shape[0], config.init_scale, config.init_shift)
            scale_shift.to(device=weight.device)
            parametrize.register_parametrization(module, weight_name, _ScaledWeight(scale_shift), unsafe=True)
            parametrize.register_parametrization(module, bias_name, _ScaledShiftedBias(scale_shift), unsafe=True)
            key = name.replace(".", "__")
            adapter.scale_shifts[key] = scale_shift
            adapter._targets[key] = (module, weight_name, bias_name)
        if not adapter.scale_shifts:
            raise ValueError(f"SSF: no module matches target_modules={list(config.target_modules)}")
        return adapter

    @property
    def target_names(self) -> list[str]:
        """Qualified names of the adapted layers."""
        return [k.replace("__", ".") for k in self.scale_shifts]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the SSF parameters: ``{"<layer>.gamma": [C], "<layer>.beta": [C]}``."""
        return {
            f"{key.replace('__', '.')}.{p}": getattr(ss, p).detach().clone()
            for key, ss in self.scale_shifts.items()
            for p in ("gamma", "beta")
        }

    def load_adapter_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`adapter_state_dict` returned (strict: same layers, same shapes)."""
        expected = set(self.adapter_state_dict())
        if set(state_dict) != expected:
            missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
            raise ValueError(f"SSF state dict does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        with torch.no_grad():
            for key, ss in self.scale_shifts.items():
                for p in ("gamma", "beta"):
                    getattr(ss, p).copy_(state_dict[f"{key.replace('__', '.')}.{p}"])

    def save(self, path: str | os.PathLike) -> None:
        """Save the adapter alone as safetensors (a few KB for the tiny model)."""
        from safetensors.torch import save_file

        save_file(self.adapter_state_dict(), os.fspath(path))

    def load(self, path: str | os.PathLike) -> None:
        """Load an adapter saved by :meth:`save`."""
        from safetensors.torch import load_file

        self.load_adapter_state_dict(load_file(os.fspath(path)))

    def merge(self) -> None:
        """Fold ``gamma``/``beta`` into the layers' weights and remove the parametrisations.

        The model then computes the same function with no SSF overhead; the adapter becomes empty.
        """
        for module, weight_name, bias_name in self._targets.values():
            for tensor_name in (weight_name, bias_name):
                parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
                getattr(module, tensor_name).requires_grad_(False)
        self._targets.clear()
        self.scale_shifts = nn.ModuleDict()
