"""Bottleneck adapters (Houlsby/Pfeiffer style) inserted into a frozen transformers model.

Each transformer block gets a small module applied to its output hidden states:
h + up(act(down(h))), with `up` initialised to zero so the model starts exactly as the base model.
No maintained adapter library supports transformers 5 (the `adapters` package pins 4.x), so this is
ours: a forward hook per block, the adapter weights saved alone in safetensors with a small config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ATTR = "ftlaunch_adapter"
CONFIG_NAME = "ftlaunch_adapter.json"
WEIGHTS_NAME = "adapter_model.safetensors"
# heads trained with the adapters for sequence-level tasks (they are new, so they cannot stay frozen)
HEAD_NAMES = ("score", "classifier")


def _nn():
    import torch.nn as nn
    return nn


def make_module(hidden: int, bottleneck: int, nonlinearity: str, dropout: float) -> Any:
    import torch
    nn = _nn()

    class Bottleneck(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.Linear(hidden, bottleneck)
            self.act = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}[nonlinearity]()
            self.dropout = nn.Dropout(dropout)
            self.up = nn.Linear(bottleneck, hidden)
            nn.init.normal_(self.down.weight, std=0.02)
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            x = h.to(self.down.weight.dtype)
            return h + self.up(self.dropout(self.act(self.down(x)))).to(h.dtype)

    return Bottleneck()


def _hook(module: Any, args: Any, output: Any) -> Any:
    """Module-level (not a closure) so a deep copy of the model, e.g. a DPO reference, keeps working."""
    adapter = getattr(module, ATTR)
    if isinstance(output, tuple):
        return (adapter(output[0]),) + tuple(output[1:])
    if hasattr(output, "last_hidden_state") and not hasattr(output, "shape"):
        output.last_hidden_state = adapter(output.last_hidden_state)
        return output
    return adapter(output)


def find_blocks(model: Any) -> tuple[str, Any]:
    """The model's list of transformer blocks: the longest ModuleList whose items share one class."""
    nn = _nn()
    best: tuple[str, Any] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and \
                len({type(m) for m in module}) == 1 and "Attention" not in type(module[0]).__name__:
            if best is None or len(module) > len(best[1]):
                best = (name, module)
    if best is None:
        raise ValueError(f"cannot find the transformer blocks of {type(model).__name__} to insert adapters into")
    return best


def hidden_size(model: Any) -> int:
    config = model.config
    for key in ("hidden_size", "d_model", "n_embd", "dim"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    text = getattr(config, "text_config", None)
    if text is not None and getattr(text, "hidden_size", None):
        return int(text.hidden_size)
    raise ValueError("cannot tell the model's hidden size for the adapters")


def apply(model: Any, reduction_factor: int = 16, nonlinearity: str = "relu", dropout: float = 0.0,
          train_head: bool = True) -> Any:
    """Freezes the model, inserts an adapter after every block, and returns the same model."""
    hidden = hidden_size(model)
    bottleneck = max(1, hidden // reduction_factor)
    path, blocks = find_blocks(model)
    for param in model.parameters():
        param.requires_grad = False
    import torch

    first = next(model.parameters())
    dtype = first.dtype if first.dtype.is_floating_point else torch.float32
    for block in blocks:
        adapter = make_module(hidden, bottleneck, nonlinearity, dropout).to(device=first.device, dtype=dtype)
        block.add_module(ATTR, adapter)
        block.register_forward_hook(_hook)
    if train_head:
        for name, param in model.named_parameters():
            if name.split(".")[0] in HEAD_NAMES:
                param.requires_grad = True
    model.ftlaunch_adapter_config = {"technique": "adapter", "reduction_factor": reduction_factor,
                                     "bottleneck": bottleneck, "hidden_size": hidden,
                                     "nonlinearity": nonlinearity, "dropout": dropout, "blocks": path,
                                     "train_head": train_head}
    return model


def trainable_state(model: Any) -> dict[str, Any]:
    """The adapter weights (and a trained head), detached, by parameter name."""
    return {name: param.detach().contiguous().cpu() for name, param in model.named_parameters()
            if param.requires_grad}


def save(model: Any, folder: str | Path) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(folder / WEIGHTS_NAME))
    config = dict(model.ftlaunch_adapter_config)
    config["base_model"] = getattr(model.config, "_name_or_path", None)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))


def is_adapter_folder(folder: str | Path) -> bool:
    return (Path(folder) / CONFIG_NAME).is_file()


def load(model: Any, folder: str | Path) -> Any:
    """Inserts the saved adapters into a freshly loaded base model and loads their weights."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / CONFIG_NAME).read_text())
    apply(model, config["reduction_factor"], config["nonlinearity"], config["dropout"], config["train_head"])
    state = load_file(str(folder / WEIGHTS_NAME))
    missing = [k for k in state if k not in dict(model.named_parameters())]
    if missing:
        raise ValueError(f"adapter weights do not fit this model: {missing[:3]}")
    model.load_state_dict(state, strict=False)
    return model
