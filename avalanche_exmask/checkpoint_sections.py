"""The sections of a checkpoint that hold a run's model, optimizer, learning-rate scheduler,
exemplar buffer and strategy: gathered for saving, checked against the objects a load goes into,
and restored.

Each ``*_section`` function returns a section of the skeleton (JSON-ready) and puts its tensors in
the ``tensors`` dict under its own prefix; each ``check_*_section`` function checks a file's
section against the live objects and returns what its ``apply_*`` counterpart restores, raising
``ValueError`` (naming the problem) and modifying nothing. The buffer's section is the buffer's
own state (:mod:`~avalanche_exmask.storage.buffer_state`). :func:`check_header` bounds every
tensor a file declares before any is read.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from avalanche.models import IncrementalClassifier

from avalanche_exmask.checkpoint_file import DTYPE_NBYTES, Header, decode_value, encode_value, is_count, require, safetensors_dtype
from avalanche_exmask.storage.buffer import ByteBudgetBuffer

__all__ = [
    "HEADROOM_NBYTES",
    "model_section",
    "optimizer_section",
    "scheduler_section",
    "buffer_section",
    "strategy_section",
    "check_header",
    "check_model_section",
    "check_optimizer_section",
    "check_scheduler_section",
    "check_strategy_section",
    "apply_model",
    "apply_optimizer",
    "apply_strategy",
]

#: Bytes a checkpoint may hold beyond three times the model's state and the buffer's budget
#: (RNG states, scheduler and caller tensors, a grown head), in bytes.
HEADROOM_NBYTES = 16 * 2**20


# ------------------------------------------------------------------------------------- gather
def model_section(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``model.state_dict()`` as ``model/<key>`` tensors; the section lists the keys.

    :raises TypeError: for a state entry that is not a tensor.
    """
    state = model.state_dict()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"model state {key!r} is a {type(value).__name__}, not a tensor")
        tensors[f"model/{key}"] = value
    return {"keys": list(state)}


def optimizer_section(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """The optimizer's type, groups (parameter names and options) and per-parameter state,
    parameters named by their name in ``model`` (tensors under ``optimizer/state/<name>/`` and
    ``optimizer/group/<index>/``).

    :raises TypeError: if the optimizer holds a parameter that is not in ``model``.
    """
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    state_dict = optimizer.state_dict()
    name_of_index: dict[int, str] = {}
    groups = []
    for position, (saved, live) in enumerate(zip(state_dict["param_groups"], optimizer.param_groups, strict=True)):
        group_names = []
        for index, parameter in zip(saved["params"], live["params"], strict=True):
            if id(parameter) not in names:
                raise TypeError(
                    f"the optimizer holds a parameter of shape {list(parameter.shape)} that is not in the model"
                )
            name_of_index[index] = names[id(parameter)]
            group_names.append(names[id(parameter)])
        options = {key: value for key, value in saved.items() if key != "params"}
        groups.append({"params": group_names, "options": encode_value(options, f"optimizer/group/{position}", tensors)})
    state = {
        name_of_index[index]: encode_value(dict(values), f"optimizer/state/{name_of_index[index]}", tensors)
        for index, values in state_dict["state"].items()
    }
    return {"type": type(optimizer).__name__, "param_groups": groups, "state": state}


def scheduler_section(scheduler: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The scheduler's type name and ``state_dict()`` (tensors under ``scheduler/``)."""
    return {"type": type(scheduler).__name__, "state": encode_value(scheduler.state_dict(), "scheduler", tensors)}


def buffer_section(buffer: ByteBudgetBuffer, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The buffer's own state (:meth:`ByteBudgetBuffer.state_dict`), its tensors under ``buffer/``."""
    state, buffer_tensors = buffer.state_dict()
    tensors.update({f"buffer/{name}": tensor for name, tensor in buffer_tensors.items()})
    return state


def strategy_section(strategy: Any) -> dict[str, Any]:
    """What Avalanche keeps in a strategy beyond model and optimizer: the names of the optimized
    parameters (``None`` before the first experience) and the clock's counters."""
    optimized = strategy.optimized_param_id
    return {
        "optimized_params": list(optimized) if optimized is not None else None,
        "clock": {key: value for key, value in vars(strategy.clock).items() if type(value) is int},
    }


# -------------------------------------------------------------------------------------- check
def _head_names(model: torch.nn.Module) -> set[str]:
    """State keys of the model's Avalanche ``IncrementalClassifier`` heads, whose row count a
    checkpoint may change (the head grows with the classes seen)."""
    names: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, IncrementalClassifier):
            prefix = f"{name}." if name else ""
            names.update(prefix + key for key in ("classifier.weight", "classifier.bias", "active_units"))
    return names


def check_header(header: Header, *, model: torch.nn.Module, buffer: ByteBudgetBuffer | None) -> None:
    """Check the tensors a file declares, from its header alone, before any is read.

    Every tensor needs a known dtype; ``model/<key>`` the model's dtype and shape (a head's row
    count may differ); ``optimizer/state/<parameter>/<key>`` a scalar or the shape of that
    parameter (as the file declares it); ``buffer/payload`` one dimension of at most the buffer's
    budget in bytes; the RNG states their fixed sizes. The declared tensors together may not exceed
    three times the model's state, plus the buffer's budget and :data:`HEADROOM_NBYTES`, in bytes.

    :raises ValueError: naming the first tensor that does not fit.
    """
    state = model.state_dict()
    heads = _head_names(model)
    generator_nbytes = torch.Generator().get_state().numel()
    total = 0
    for name, (dtype, shape) in header.items():
        require(dtype in DTYPE_NBYTES, f"tensor {name!r} has dtype {dtype}, which a checkpoint never holds")
        count = 1
        for size in shape:
            count *= size
        total += count * DTYPE_NBYTES[dtype]
        section, _, rest = name.partition("/")
        if section == "model":
            require(rest in state, f"model tensor {rest!r} is not in the model")
            expected = state[rest]
            require(
                dtype == safetensors_dtype(expected.dtype)
                and len(shape) == expected.ndim
                and (shape == tuple(expected.shape) or (rest in heads and shape[1:] == tuple(expected.shape[1:]))),
                f"model tensor {rest!r} is declared {dtype} {list(shape)}; the model's is "
                f"{safetensors_dtype(expected.dtype)} {list(expected.shape)}",
            )
        elif name.startswith("optimizer/state/"):
            parameter = rest.removeprefix("state/").partition("/")[0]
            require(parameter in state, f"optimizer state {name!r} names no parameter of the model")
            declared = header.get(f"model/{parameter}", (None, tuple(state[parameter].shape)))[1]
            require(shape in ((), declared), f"optimizer state {name!r} has shape {list(shape)}; its parameter's is {list(declared)}")
        elif name == "buffer/payload":
            limit = buffer.max_size if buffer is not None else 0
            require(
                dtype == "U8" and len(shape) == 1 and (buffer is None or shape[0] <= limit),
                f"buffer payload is declared {dtype} {list(shape)}; the buffer's budget is {limit} bytes",
            )
        elif name == "rng/torch" or name.startswith("buffer/generator/"):
            require(dtype == "U8" and shape == (generator_nbytes,), f"RNG state {name!r} is declared {dtype} {list(shape)}")
        elif name == "rng/numpy":
            require(dtype == "I64" and shape == (624,), f"NumPy RNG state is declared {dtype} {list(shape)}")
        else:
            require(section in ("optimizer", "rng", "scheduler", "extra"), f"tensor {name!r} is in no section of the format")
    model_nbytes = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    limit = 3 * model_nbytes + (buffer.max_size if buffer is not None else 0) + HEADROOM_NBYTES
    require(total <= limit, f"its tensors declare {total} bytes; a checkpoint of this model holds at most {limit}")


def check_model_section(
    skeleton: Any, tensors: Mapping[str, torch.Tensor], model: torch.nn.Module
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The model state to load and the heads to resize (``{module name: classes}``).

    An Avalanche ``IncrementalClassifier`` head may hold more (grown) units in the checkpoint than
    in ``model``; it is resized before loading. Every other tensor must match in shape.
    """
    require(isinstance(skeleton, dict) and isinstance(skeleton.get("keys"), list), "malformed model section")
    missing = [key for key in skeleton["keys"] if f"model/{key}" not in tensors]
    require(not missing, f"model tensors {missing[:5]} are listed but not in the file")
    state = {key: tensors[f"model/{key}"] for key in skeleton["keys"]}
    current = model.state_dict()
    absent, unexpected = sorted(current.keys() - state.keys()), sorted(state.keys() - current.keys())
    require(not absent and not unexpected, f"model keys differ: missing {absent[:5]}, unexpected {unexpected[:5]}")
    expected = {key: tuple(value.shape) for key, value in current.items()}
    heads = {}
    for name, module in model.named_modules():
        if isinstance(module, IncrementalClassifier):
            prefix = f"{name}." if name else ""
            saved = tuple(state[f"{prefix}classifier.weight"].shape)
            require(
                len(saved) == 2 and saved[1] == module.classifier.in_features,
                f"head {name or 'model'} has {module.classifier.in_features} input features; checkpoint {saved}",
            )
            heads[name] = saved[0]
            resized = {"classifier.weight": saved, "classifier.bias": saved[:1], "active_units": saved[:1]}
            for key, shape in resized.items():
                if prefix + key in expected:
                    expected[prefix + key] = shape
    for key, value in state.items():
        require(
            tuple(value.shape) == expected[key],
            f"model tensor {key!r} has shape {list(value.shape)}; the model's is {list(expected[key])}",
        )
    return state, heads


def check_optimizer_section(
    skeleton: Any, tensors: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer, model: torch.nn.Module
) -> tuple[list[list[str]], dict[str, Any]]:
    """The parameter names of each group and the ``state_dict`` to load."""
    require(isinstance(skeleton, dict), "no optimizer state in the file")
    require(
        skeleton.get("type") == type(optimizer).__name__,
        f"optimizer is a {type(optimizer).__name__}; the checkpoint holds a {skeleton.get('type')!r}",
    )
    groups = skeleton.get("param_groups")
    require(
        isinstance(groups, list) and len(groups) == len(optimizer.param_groups),
        f"optimizer has {len(optimizer.param_groups)} parameter group(s); the checkpoint a different number",
    )
    parameters = dict(model.named_parameters())
    index_of: dict[str, int] = {}
    names, saved_groups = [], []
    for group in groups:
        require(isinstance(group, dict) and isinstance(group.get("params"), list), "malformed parameter group")
        unknown = [name for name in group["params"] if name not in parameters]
        require(not unknown, f"optimizer parameters {unknown[:5]} are not parameters of the model")
        options = decode_value(group.get("options"), tensors)
        require(isinstance(options, dict), "malformed parameter group options")
        names.append(list(group["params"]))
        indices = [index_of.setdefault(name, len(index_of)) for name in group["params"]]
        saved_groups.append({**options, "params": indices})
    state = skeleton.get("state")
    require(isinstance(state, dict), "malformed optimizer state")
    unknown = [name for name in state if name not in index_of]
    require(not unknown, f"optimizer state for {unknown[:5]}, which no parameter group holds")
    decoded_state = {}
    for name, values in state.items():
        values = decode_value(values, tensors)
        require(isinstance(values, dict), f"malformed optimizer state of {name!r}")
        decoded_state[index_of[name]] = values
    return names, {"state": decoded_state, "param_groups": saved_groups}


def check_scheduler_section(section: Any, tensors: Mapping[str, torch.Tensor], scheduler: Any) -> dict[str, Any]:
    """The scheduler ``state_dict`` to load, if the section holds one of ``scheduler``'s type."""
    require(
        isinstance(section, dict) and section.get("type") == type(scheduler).__name__,
        f"scheduler is a {type(scheduler).__name__}; the checkpoint holds {str(section)[:60]}",
    )
    state = decode_value(section.get("state"), tensors)
    require(isinstance(state, dict), "malformed scheduler state")
    return state


def check_strategy_section(section: Any, model: torch.nn.Module) -> dict[str, Any]:
    """The strategy section, if its optimized parameters are ``model``'s and its clock counters
    are ints ``>= 0``."""
    if not isinstance(section, dict):
        raise ValueError("no strategy state in the file")
    optimized = section.get("optimized_params")
    parameter_names = dict(model.named_parameters()).keys()
    require(
        optimized is None or (isinstance(optimized, list) and set(optimized) <= parameter_names),
        "the strategy's optimized parameters are not parameters of the model",
    )
    clock = section.get("clock")
    require(isinstance(clock, dict) and all(map(is_count, clock.values())), "malformed strategy clock")
    return section


# -------------------------------------------------------------------------------------- apply
def _resize_head(head: IncrementalClassifier, n_classes: int) -> None:
    """Give an Avalanche ``IncrementalClassifier`` ``n_classes`` units, uninitialised (their values
    are loaded next; no random number is drawn)."""
    if head.classifier.out_features == n_classes:
        return
    weight = head.classifier.weight
    head.classifier = torch.nn.utils.skip_init(
        torch.nn.Linear, head.classifier.in_features, n_classes, device=weight.device, dtype=weight.dtype
    )
    head.active_units = torch.zeros(n_classes, dtype=torch.int8, device=head.active_units.device)


def apply_model(model: torch.nn.Module, state: Mapping[str, torch.Tensor], heads: Mapping[str, int]) -> None:
    """Resize the heads to their saved units (``{module name: classes}``), then load ``state``
    (what :func:`check_model_section` returned)."""
    for name, n_classes in heads.items():
        _resize_head(model.get_submodule(name), n_classes)
    model.load_state_dict(state)


def apply_optimizer(optimizer: torch.optim.Optimizer, model: torch.nn.Module, plan: tuple[list[list[str]], dict[str, Any]]) -> None:
    """Set each parameter group to the model's parameters the checkpoint names (after a resized
    head: the new head's), then load the state (``plan``: what :func:`check_optimizer_section`
    returned)."""
    names, optimizer_state = plan
    parameters = dict(model.named_parameters())
    for group, group_names in zip(optimizer.param_groups, names, strict=True):
        group["params"] = [parameters[name] for name in group_names]
    optimizer.load_state_dict(optimizer_state)


def apply_strategy(strategy: Any, model: torch.nn.Module, section: Mapping[str, Any]) -> None:
    """Restore Avalanche's record of the optimized parameters (by name, in ``model``) and the
    clock's counters (``section``: what :func:`check_strategy_section` returned)."""
    parameters = dict(model.named_parameters())
    optimized = section["optimized_params"]
    strategy.optimized_param_id = {name: parameters[name] for name in optimized} if optimized is not None else None
    for counter, value in section["clock"].items():
        setattr(strategy.clock, counter, value)
