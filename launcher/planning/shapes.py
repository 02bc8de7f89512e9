"""A model's shape without its weights: layer counts and sizes from config.json, GGUF metadata, the hub, a built-in table, or `--params 7B`.

Everything the estimator needs (parameter count by part, hidden sizes, heads, vocabulary) comes from
here; nothing imports torch or transformers. Parameter counts are computed from the shape, so they
match what transformers builds for the standard decoder families (Llama, Qwen2/3, Mistral, Gemma, Phi3,
GPT-2) exactly, apart from buffers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
from pathlib import Path
from typing import Any, BinaryIO

from ftlaunch.core import errors, models


@dataclasses.dataclass(frozen=True)
class Shape:
    """A decoder-only transformer's dimensions (the fields of a Hugging Face config.json)."""

    name: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    head_dim: int | None = None  # default hidden_size // num_heads
    tie_embeddings: bool = True
    gated_mlp: bool = True  # SwiGLU/GeGLU: gate, up, down (False: fc in, fc out, as GPT-2)
    norm: str = "rms"  # "rms" (weight only) or "layer" (weight and bias)
    attention_bias: bool = False  # q/k/v biases (Qwen2); GPT-2 has biases everywhere (mlp_bias)
    mlp_bias: bool = False
    qk_norm: bool = False  # Qwen3: RMSNorm over each head's q and k
    extra_norms_per_layer: int = 0  # Gemma 2/3: pre/post feed-forward norms
    max_positions: int = 0  # learned position embeddings (GPT-2); 0 for RoPE
    source: str = ""

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.hd

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.hd

    def linears(self) -> list[tuple[str, int, int]]:
        """(module name, in_features, out_features) of one layer's linear layers, in peft's naming."""
        h, f = self.hidden_size, self.intermediate_size
        if not self.gated_mlp and self.norm == "layer" and self.max_positions:  # GPT-2 (Conv1D, fused qkv)
            return [("c_attn", h, 3 * h), ("c_proj", h, h), ("c_fc", h, f), ("mlp.c_proj", f, h)]
        attn = [("q_proj", h, self.q_dim), ("k_proj", h, self.kv_dim), ("v_proj", h, self.kv_dim),
                ("o_proj", self.q_dim, h)]
        mlp = [("gate_proj", h, f), ("up_proj", h, f), ("down_proj", f, h)] if self.gated_mlp else \
            [("up_proj", h, f), ("down_proj", f, h)]
        return attn + mlp

    def layer_params(self) -> int:
        """Parameters in one transformer block."""
        n = sum(i * o for _, i, o in self.linears())
        h = self.hidden_size
        if self.attention_bias:
            n += self.q_dim + 2 * self.kv_dim
        if self.mlp_bias:  # GPT-2: every linear has a bias
            n += sum(o for _, _, o in self.linears())
        norm = 2 * h if self.norm == "layer" else h
        n += (2 + self.extra_norms_per_layer) * norm
        if self.qk_norm:
            n += 2 * self.hd
        return n

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size + self.max_positions * self.hidden_size

    def head_params(self) -> int:
        """The LM head (0 when tied to the input embedding)."""
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden_size

    def linear_params(self) -> int:
        """Weights of the blocks' linear layers: what 4-bit quantisation and 'all-linear' LoRA touch."""
        return self.num_layers * sum(i * o for _, i, o in self.linears())

    @property
    def params(self) -> int:
        final_norm = 2 * self.hidden_size if self.norm == "layer" else self.hidden_size
        return self.embedding_params() + self.num_layers * self.layer_params() + final_norm + self.head_params()

    @property
    def size_class(self) -> str:
        return size_class(self.params)


def size_class(params: int) -> str:
    """The seed's size classes: small < 300M, medium 300M-3B, large > 3B parameters."""
    if params < 300e6:
        return "small"
    if params <= 3e9:
        return "medium"
    return "large"


# --------------------------------------------------------------------------- built-in table

def _llama(name, v, h, layers, heads, kv, f, tied, hd=None, **kw) -> Shape:
    return Shape(name, v, h, layers, heads, kv, f, head_dim=hd, tie_embeddings=tied, **kw)


# Dimensions from each model's config.json on the Hugging Face hub (recalled; `shapes.from_config` reads the real one).
BUILTIN: dict[str, Shape] = {s.name.lower(): s for s in (
    _llama("meta-llama/Llama-3.2-1B", 128256, 2048, 16, 32, 8, 8192, True),
    _llama("meta-llama/Llama-3.2-3B", 128256, 3072, 28, 24, 8, 8192, True),
    _llama("meta-llama/Llama-3.1-8B", 128256, 4096, 32, 32, 8, 14336, False),
    _llama("meta-llama/Llama-3.1-70B", 128256, 8192, 80, 64, 8, 28672, False),
    _llama("meta-llama/Llama-3.3-70B-Instruct", 128256, 8192, 80, 64, 8, 28672, False),
    _llama("meta-llama/Llama-3.1-405B", 128256, 16384, 126, 128, 8, 53248, False),
    _llama("Qwen/Qwen2.5-0.5B", 151936, 896, 24, 14, 2, 4864, True, attention_bias=True),
    _llama("Qwen/Qwen2.5-1.5B", 151936, 1536, 28, 12, 2, 8960, True, attention_bias=True),
    _llama("Qwen/Qwen2.5-3B", 151936, 2048, 36, 16, 2, 11008, True, attention_bias=True),
    _llama("Qwen/Qwen2.5-7B", 152064, 3584, 28, 28, 4, 18944, False, attention_bias=True),
    _llama("Qwen/Qwen2.5-14B", 152064, 5120, 48, 40, 8, 13824, False, attention_bias=True),
    _llama("Qwen/Qwen2.5-32B", 152064, 5120, 64, 40, 8, 27648, False, attention_bias=True),
    _llama("Qwen/Qwen2.5-72B", 152064, 8192, 80, 64, 8, 29568, False, attention_bias=True),
    _llama("Qwen/Qwen3-0.6B", 151936, 1024, 28, 16, 8, 3072, True, hd=128, qk_norm=True),
    _llama("Qwen/Qwen3-1.7B", 151936, 2048, 28, 16, 8, 6144, True, hd=128, qk_norm=True),
    _llama("Qwen/Qwen3-4B", 151936, 2560, 36, 32, 8, 9728, True, hd=128, qk_norm=True),
    _llama("Qwen/Qwen3-8B", 151936, 4096, 36, 32, 8, 12288, False, hd=128, qk_norm=True),
    _llama("Qwen/Qwen3-14B", 151936, 5120, 40, 40, 8, 17408, False, hd=128, qk_norm=True),
    _llama("Qwen/Qwen3-32B", 151936, 5120, 64, 64, 8, 25600, False, hd=128, qk_norm=True),
    _llama("mistralai/Mistral-7B-v0.3", 32768, 4096, 32, 32, 8, 14336, False),
    _llama("mistralai/Mistral-Nemo-Base-2407", 131072, 5120, 40, 32, 8, 14336, False, hd=128),
    _llama("google/gemma-2-2b", 256000, 2304, 26, 8, 4, 9216, True, hd=256, extra_norms_per_layer=2),
    _llama("google/gemma-2-9b", 256000, 3584, 42, 16, 8, 14336, True, hd=256, extra_norms_per_layer=2),
    _llama("google/gemma-2-27b", 256000, 4608, 46, 32, 16, 36864, True, hd=128, extra_norms_per_layer=2),
    _llama("google/gemma-3-1b-pt", 262144, 1152, 26, 4, 1, 6912, True, hd=256, extra_norms_per_layer=2,
           qk_norm=True),
    _llama("microsoft/Phi-3-mini-4k-instruct", 32064, 3072, 32, 32, 32, 8192, False),
    _llama("microsoft/Phi-3.5-mini-instruct", 32064, 3072, 32, 32, 32, 8192, False),
    _llama("microsoft/phi-4", 100352, 5120, 40, 40, 10, 17920, False),
    _llama("HuggingFaceTB/SmolLM2-135M", 49152, 576, 30, 9, 3, 1536, True),
    _llama("HuggingFaceTB/SmolLM2-360M", 49152, 960, 32, 15, 5, 2560, True),
    _llama("HuggingFaceTB/SmolLM2-1.7B", 49152, 2048, 24, 32, 32, 8192, True),
    Shape("openai-community/gpt2", 50257, 768, 12, 12, 12, 3072, gated_mlp=False, norm="layer", mlp_bias=True,
          max_positions=1024),
    Shape("openai-community/gpt2-medium", 50257, 1024, 24, 16, 16, 4096, gated_mlp=False, norm="layer",
          mlp_bias=True, max_positions=1024),
    Shape("openai-community/gpt2-large", 50257, 1280, 36, 20, 20, 5120, gated_mlp=False, norm="layer",
          mlp_bias=True, max_positions=1024),
    Shape("openai-community/gpt2-xl", 50257, 1600, 48, 25, 25, 6400, gated_mlp=False, norm="layer",
          mlp_bias=True, max_positions=1024),
)}

# `--params 7B` with no model: a Llama-style shape scaled to the count (stated in the output).
DEFAULT_FAMILY = "Llama-style (SwiGLU MLP 3.5x hidden, GQA 8 KV heads, head dim 128, vocab 128256, untied)"


# --------------------------------------------------------------------------- resolving

def resolve(model: str, *, base_dir: str | None = None, params: str | float | None = None,
            online: bool = False) -> Shape:
    """The shape of the spec's `model`: --params, a local config.json or GGUF, the built-in table, then the hub.
    It is named as the spec names the model (a hub id, folder or file as given), whatever it was read from."""
    if params is not None:
        return from_params(params)
    ref = models.resolve(model, base_dir=base_dir)
    if ref.kind == "folder":
        return dataclasses.replace(from_config(Path(ref.location) / "config.json"), name=model)
    if ref.kind == "gguf":
        return from_gguf(Path(ref.location) / ref.gguf_file, name=model)
    found = builtin(ref.location)
    if found is not None:
        if found.name == model:
            return found
        # Qwen/Qwen2.5-7B-Instruct has Qwen/Qwen2.5-7B's shape, and keeps its own name
        return dataclasses.replace(found, name=model, source=f"built-in table ({found.name})")
    if online:
        return from_hub(ref.location)
    raise errors.UserError(
        f"model '{model}': its shape is not in ftlaunch's built-in table and the hub was not asked.",
        hint="pass --params 7B, point at a folder with config.json, or allow the hub with --online")


def builtin(name: str) -> Shape | None:
    """The built-in shape for a hub id or a bare name ('Qwen2.5-7B', 'qwen/qwen2.5-7b-instruct', 'gpt2')."""
    key = name.strip().lower()
    if key in BUILTIN:
        return BUILTIN[key]
    bare = key.rsplit("/", 1)[-1]
    bare = re.sub(r"[-_.](instruct|it|chat|base|hf)$", "", bare)
    bare = re.sub(r"\.(q\d.*|f16|bf16|f32)$", "", bare)  # GGUF file stems: SmolLM2-135M-Instruct.Q4_1
    bare = re.sub(r"[-_.](instruct|it|chat|base|hf)$", "", bare)
    for full, shape in BUILTIN.items():
        stem = full.rsplit("/", 1)[-1]
        if stem in (bare, re.sub(r"[-_.](instruct|it|pt|base)$", "", bare)) or \
                re.sub(r"[-_.](instruct|it|pt|base)$", "", stem) == bare:
            return shape
    return None


def from_params(params: str | float) -> Shape:
    """A Llama-style shape with about `params` parameters ('7B', '500M', 7e9): depth and width from the
    Llama 3 family's aspect ratios (layers = hidden / 128, as Llama 3.1 8B)."""
    n = parse_count(params)
    best = None
    for hidden in range(512, 32769, 128):
        heads = max(1, hidden // 128)
        layers = max(2, round(hidden / 128))
        f = int(round(3.5 * hidden / 256) * 256)
        shape = Shape(f"--params {params}", 128256, hidden, layers, heads, min(8, heads), f, head_dim=128,
                      tie_embeddings=False, source=f"--params {params}: {DEFAULT_FAMILY}")
        err = abs(shape.params - n)
        if best is None or err < best[0]:
            best = (err, shape)
    return best[1]


def parse_count(text: str | float) -> int:
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMbBtT]?)\s*", text)
    if not m:
        raise errors.UserError(f"--params {text}: expected a count such as 7B, 500M or 1.5e9.")
    return int(float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()])


def from_config(path: str | Path) -> Shape:
    """Reads a Hugging Face config.json."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise errors.UserError(f"{path}: cannot read the model config ({exc}).") from None
    return from_config_dict(cfg, name=str(path.parent), source=str(path))


def from_config_dict(cfg: dict[str, Any], name: str = "config", source: str = "config.json") -> Shape:
    cfg = dict(cfg.get("text_config") or {}, **{k: v for k, v in cfg.items() if k != "text_config"}) \
        if "text_config" in cfg and "hidden_size" not in cfg else cfg
    model_type = cfg.get("model_type", "")
    if model_type == "gpt2" or "n_embd" in cfg:
        h = cfg["n_embd"]
        return Shape(name, cfg["vocab_size"], h, cfg["n_layer"], cfg["n_head"], cfg["n_head"],
                     cfg.get("n_inner") or 4 * h, gated_mlp=False, norm="layer", mlp_bias=True,
                     max_positions=cfg.get("n_positions", 1024), tie_embeddings=True, source=source)
    try:
        h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        shape = Shape(
            name, cfg["vocab_size"], h, cfg["num_hidden_layers"], heads,
            cfg.get("num_key_value_heads") or heads, cfg["intermediate_size"], head_dim=cfg.get("head_dim"),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", model_type not in ("mistral", "phi3"))),
            attention_bias=bool(cfg.get("attention_bias", model_type == "qwen2")),
            mlp_bias=bool(cfg.get("mlp_bias", False)), qk_norm=model_type.startswith(("qwen3", "gemma3")),
            extra_norms_per_layer=2 if model_type.startswith(("gemma2", "gemma3")) else 0, source=source)
    except KeyError as exc:
        raise errors.UserError(f"{source}: the config has no {exc.args[0]!r}; ftlaunch reads decoder-only "
                               "transformer configs (Llama, Qwen, Mistral, Gemma, Phi, GPT-2).",
                               hint="pass --params with the model's parameter count instead") from None
    return shape


def from_hub(model_id: str, timeout: float = 10.0) -> Shape:
    """Downloads only config.json from the Hugging Face hub (urllib; $HF_TOKEN for gated models)."""
    import os
    import urllib.error
    import urllib.request

    url = f"https://huggingface.co/{model_id}/resolve/main/config.json"
    req = urllib.request.Request(url)
    if os.environ.get("HF_TOKEN"):
        req.add_header("Authorization", f"Bearer {os.environ['HF_TOKEN']}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (fixed https host)
            cfg = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise errors.UserError(f"model '{model_id}': could not read its config.json from the hub ({exc}).",
                               hint="pass --params, or a local folder with config.json") from None
    return from_config_dict(cfg, name=model_id, source=url)


# --------------------------------------------------------------------------- GGUF

_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_gguf(path: str | Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """The metadata and tensor shapes of a GGUF file (v2/v3), read from its header only (no numpy, no weights).
    Arrays are returned as their length, except short numeric ones."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise errors.UserError(f"{path} is not a GGUF file (bad magic).")
        version, = struct.unpack("<I", f.read(4))
        if version < 2:
            raise errors.UserError(f"{path}: GGUF version {version} is too old to read.")
        n_tensors, n_kv = struct.unpack("<QQ", f.read(16))
        meta = {}
        for _ in range(n_kv):
            key = _gguf_str(f)
            vtype, = struct.unpack("<I", f.read(4))
            meta[key] = _gguf_value(f, vtype)
        tensors = {}
        for _ in range(n_tensors):
            name = _gguf_str(f)
            n_dims, = struct.unpack("<I", f.read(4))
            dims = struct.unpack(f"<{n_dims}Q", f.read(8 * n_dims))
            f.read(4 + 8)  # type, offset
            tensors[name] = tuple(dims)
    return meta, tensors


def _gguf_str(f: BinaryIO) -> str:
    n, = struct.unpack("<Q", f.read(8))
    return f.read(n).decode("utf-8", errors="replace")


def _gguf_value(f: BinaryIO, vtype: int) -> Any:
    if vtype in _GGUF_SCALARS:
        fmt = _GGUF_SCALARS[vtype]
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    if vtype == 8:
        return _gguf_str(f)
    if vtype == 9:
        etype, count = struct.unpack("<IQ", f.read(12))
        if etype in _GGUF_SCALARS:
            size = struct.calcsize(_GGUF_SCALARS[etype])
            data = f.read(size * count)
            return list(struct.unpack(f"<{count}{_GGUF_SCALARS[etype][1]}", data)) if count <= 64 else count
        for _ in range(count):
            _gguf_value(f, etype)
        return count
    raise errors.UserError(f"GGUF value type {vtype} is unknown.")


def from_gguf(path: str | Path, name: str | None = None) -> Shape:
    """A model's shape from its GGUF header; tied embeddings when the file has no output.weight tensor. Named
    `name`, else the file's name; the header's general.name ("Smollm2 135M 8k Lc100K Mix1 Ep2") only when
    neither is known."""
    meta, tensors = read_gguf(path)
    arch = meta.get("general.architecture", "llama")

    def get(key: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{key}", default)

    try:
        h, heads = int(get("embedding_length")), int(get("attention.head_count"))
        vocab = get("vocab_size") or meta.get("tokenizer.ggml.tokens")
        kv = get("attention.head_count_kv", heads)
        ff = get("feed_forward_length")
        shape = Shape(
            name=name or Path(path).name or str(meta.get("general.name")), vocab_size=int(vocab), hidden_size=h,
            num_layers=int(get("block_count")), num_heads=heads, num_kv_heads=int(kv if not isinstance(kv, list) else kv[0]),
            intermediate_size=int(ff if not isinstance(ff, list) else ff[0]),
            head_dim=get("attention.key_length") if get("attention.key_length") not in (None, h // heads) else None,
            tie_embeddings="output.weight" not in tensors,
            attention_bias="blk.0.attn_q.bias" in tensors, qk_norm="blk.0.attn_q_norm.weight" in tensors,
            source=f"GGUF metadata of {path}")
    except (TypeError, ValueError) as exc:
        builtin_shape = builtin(Path(path).stem)
        if builtin_shape is not None:
            return dataclasses.replace(builtin_shape, name=name or Path(path).name,
                                       source=f"built-in table ({builtin_shape.name})")
        raise errors.UserError(f"{path}: the GGUF metadata lacks the model's dimensions ({exc}).",
                               hint="pass --params with the model's parameter count") from None
    return shape


def gguf_param_count(path: str | Path) -> int:
    """Elements over all tensors of a GGUF file: the stored model's exact parameter count."""
    _, tensors = read_gguf(path)
    return sum(math.prod(d) for d in tensors.values())
