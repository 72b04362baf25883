"""Reading and writing MegaTTS3 checkpoint folders in upstream's format.

Every sub-folder of a MegaTTS3 model holds a ``config.yaml`` and a torch checkpoint that is a
pickle of ``{"state_dict": {inner_key: OrderedDict}}``. We read it with ``weights_only=True`` so a
file that would need arbitrary unpickling is refused instead of executed.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import yaml
from flashtts_core.errors import ModelLoadError
from flashtts_core.loading import building_modules
from torch import nn

logger = logging.getLogger("flashtts.mega")

# Wrapper names that training adds to parameter paths: DistributedDataParallel (`module.`) and
# torch.compile (`_orig_mod.`). Upstream drops them wherever they occur in a key.
WRAPPER_COMPONENTS = frozenset({"module", "_orig_mod"})

# How many offending key names an error message shows.
SHOWN_KEYS = 8

# Above this many parameters a model is built on the meta device and the checkpoint's tensors become
# its parameters: no random initialisation to throw away, no second copy in memory. Small models are
# built normally: the first random initialiser run on meta costs seconds.
META_BUILD_PARAMETERS = 20_000_000


def read_config(folder: Path) -> dict:
    """``folder/config.yaml`` as a dict (safe YAML); a ModelLoadError naming the file otherwise."""
    file = Path(folder) / "config.yaml"
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {file}: {exc}") from exc
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"{file} is not valid YAML: {exc}") from exc
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ModelLoadError(f"{file} must hold a mapping of settings, found {type(config).__name__}")
    return config


def write_config(folder: Path, config: dict) -> None:
    """Write ``folder/config.yaml`` (creating the folder); keys are kept in the given order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def strip_wrappers(key: str) -> str:
    """``module.`` / ``_orig_mod.`` path components removed from a parameter name."""
    parts = key.split(".")
    if not WRAPPER_COMPONENTS.intersection(parts):
        return key
    return ".".join(p for p in parts if p not in WRAPPER_COMPONENTS)


def _unpickler_reason(exc: Exception) -> str | None:
    # torch's message is a long how-to-bypass text; keep only the line that names the object.
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    return f"it needs {found.group(1)}" if found else None


def load_state_dict(file: Path, inner_key: str) -> dict[str, torch.Tensor]:
    """The ``inner_key`` state dict of an upstream checkpoint, on the CPU, wrapper prefixes stripped."""
    file = Path(file)
    if not file.is_file():
        raise ModelLoadError(f"checkpoint {file} does not exist")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global outside torch's allow-list; say so rather than unpickle.
        reason = _unpickler_reason(exc)
        if reason is None:
            raise ModelLoadError(f"cannot read checkpoint {file}: not a torch checkpoint file") from exc
        raise ModelLoadError(
            f"checkpoint {file} holds Python objects that need arbitrary unpickling, which is refused "
            f"(only tensors and plain containers are read): {reason}"
        ) from exc
    except Exception as exc:  # a truncated or foreign file: torch raises many different types
        raise ModelLoadError(f"cannot read checkpoint {file}: {exc}") from exc
    outer = checkpoint.get("state_dict") if isinstance(checkpoint, Mapping) else None
    if not isinstance(outer, Mapping):
        raise ModelLoadError(f"checkpoint {file} has no 'state_dict' mapping (upstream's format)")
    outer = {strip_wrappers(str(k)): v for k, v in outer.items()}
    inner = outer.get(inner_key)
    if not isinstance(inner, Mapping):
        raise ModelLoadError(
            f"checkpoint {file} has no state dict under 'state_dict' → '{inner_key}' (found keys {sorted(outer)[:SHOWN_KEYS]})"
        )
    state_dict: dict[str, torch.Tensor] = {}
    for key, value in inner.items():
        if not isinstance(value, torch.Tensor):
            raise ModelLoadError(f"checkpoint {file}: entry '{key}' of '{inner_key}' is not a tensor")
        state_dict[strip_wrappers(str(key))] = value
    return state_dict


def _shown(keys: list[str]) -> str:
    more = f" … ({len(keys)} in all)" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def build_for_loading(factory: Callable[[], nn.Module], state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """``factory()`` on the meta device when the checkpoint is large (then load with assign=True)."""
    # Under the build lock: not while an LLM's from_pretrained has changed the default dtype.
    with building_modules():
        if sum(v.numel() for v in state_dict.values()) < META_BUILD_PARAMETERS:
            return factory()
        with torch.device("meta"):
            return factory()


def load_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str, assign: bool | None = None
) -> None:
    """Load with no missing and no unexpected keys and equal shapes; a ModelLoadError naming ``what`` otherwise.

    ``assign`` (default: when the module is on the meta device) makes the tensors the parameters.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_shown(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_shown(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (checkpoint vs model): {_shown(mismatched)}")
    if problems:
        raise ModelLoadError(f"{what} does not match the model built from its config: " + "; ".join(problems))
    if assign is None:
        assign = any(t.is_meta for t in own.values())
    module.load_state_dict(state_dict, strict=True, assign=assign)


def read_folder(folder: Path, file_name: str, inner_key: str) -> tuple[dict, Path, dict[str, torch.Tensor]]:
    """One sub-folder's ``config.yaml`` and checkpoint: ``(config, checkpoint file, state dict)``."""
    folder = Path(folder)
    config = read_config(folder)
    file = folder / file_name
    return config, file, load_state_dict(file, inner_key)


def build_checked(factory: Callable[..., nn.Module], sizes: Mapping[str, object], what: str) -> nn.Module:
    """``factory(**sizes)``; sizes the model refuses (a ValueError) become a ModelLoadError naming ``what``."""
    try:
        return factory(**sizes)
    except ValueError as exc:
        raise ModelLoadError(f"{what}: {exc}") from exc


def ready_for_inference(model: nn.Module, device: str | torch.device, dtype: torch.dtype) -> nn.Module:
    """On ``device`` in ``dtype``, in eval mode, with no gradients."""
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def million_parameters(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def save_checkpoint(file: Path, inner_key: str, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Write ``{"state_dict": {inner_key: OrderedDict}}`` as upstream does (creating the folder)."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    # Clones so that views into a larger storage do not drag the whole storage into the file.
    tensors = OrderedDict((k, v.detach().cpu().clone()) for k, v in state_dict.items())
    torch.save({"state_dict": {inner_key: tensors}}, file)
