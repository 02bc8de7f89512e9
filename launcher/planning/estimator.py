"""Memory, time and cost of a fine-tuning job, predicted from the model's shape, the technique and the GPU (no torch).

Memory is counted the way the trainer (`ftlaunch.containers.trainer`) builds the job: full fine-tuning
loads fp32 weights and trains under bf16/fp16 autocast (ZeRO's 16 bytes per parameter with AdamW); peft
techniques load the base in the compute dtype and keep the adapters, their gradients and optimizer states
in fp32; QLoRA stores the blocks' linear weights in 4-bit NF4 and, through peft's
prepare_model_for_kbit_training, the other weights in fp32. docs/estimator.md sets the numbers beside
published figures and the tests compare them with what a real model holds after one optimizer step.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Iterable

from ftlaunch import backends
from ftlaunch.core import gpus as gpu_catalog
from ftlaunch.planning.shapes import Shape
from ftlaunch.core.techniques import LORA_FAMILY, USE_CASES, Task, Technique, trainable_percent

GB = 1e9  # the one memory unit of every figure ftlaunch prints or writes: GB = 10^9 bytes (not GiB)
MEMORY_UNIT = "GB"
# An offer fits only when the predicted peak stays under this share of the GPU's memory. The peak already
# counts 1 GB of CUDA context and 5 % allocator slack; the rest of the margin covers what the formula
# cannot see on a real run (fragmentation after uneven sequence lengths, NCCL/cuBLAS workspaces growing
# with the world size, other processes on the GPU). At 90 %, a peak of 91.2 GB does not "fit" 94 GB.
HEADROOM = 0.90
RUNTIME_OVERHEAD_BYTES = 1.0e9  # CUDA context, cuBLAS/cuDNN workspaces, NCCL buffers
FRAGMENTATION = 0.05  # caching-allocator slack, as a fraction of everything else
NF4_BYTES = {True: 0.5 + 1 / 64 + 4 / (64 * 256), False: 0.5 + 4 / 64}  # double_quant -> bytes per weight
OPTIMIZER_BYTES = {"adamw": 8.0, "adamw_8bit": 2.0 * (1 + 4 / 256), "sgd": 0.0}  # per trainable parameter
STEP_BYTES = {"adamw": 4, "adamw_8bit": 4, "sgd": 0, "adafactor": 4}  # the step counter, per parameter tensor
SEQ_CLS_TASKS = (Task.CLASSIFICATION, Task.REWARD)

# Model FLOPs utilisation (low, high) per technique on a datacenter GPU with FlashAttention/SDPA:
# llm-foundry's H100 table (full FT, 38-46% MFU) and the LoRA/QLoRA discussion in docs/estimator.md.
MFU = {"full": (0.30, 0.45), "peft": (0.22, 0.38), "qlora": (0.12, 0.28)}
IMAGE_GB = 8.0  # training image size, pulled at 0.5 to 0.1 GB/s
DOWNLOAD_GBPS = (1.0, 0.2)  # model download from the hub or a bucket, GB/s (fast, slow)
CHARS_PER_TOKEN = (4.5, 3.5)  # English BPE: fewer tokens (low), more tokens (high)
DEFAULT_ROWS = 10_000  # rows assumed when the data is not local and max_samples is unset


@dataclasses.dataclass(frozen=True)
class Workload:
    """What the estimator needs from a spec, in one flat record (see `workload_from_spec`)."""

    technique: Technique = Technique.LORA
    task: Task = Task.SFT
    batch_size: int = 8
    seq_len: int = 512
    grad_accum: int = 1
    optimizer: str = "adamw"
    precision: str = "bf16"  # bf16 | fp16 | fp32: the compute dtype
    gradient_checkpointing: bool = True
    attention: str = "sdpa"  # sdpa/flash (no s x s scores kept) | eager
    lora_r: int = 16
    lora_targets: Any = "all-linear"  # or a list of module names
    lora_dropout: float = 0.05
    double_quant: bool = True
    num_virtual_tokens: int = 20
    encoder_hidden_size: int = 128
    adapter_reduction: int = 16
    num_labels: int = 2
    distributed: str = "auto"  # auto | ddp | fsdp | deepspeed (ZeRO-3)
    epochs: float = 1.0
    max_steps: int | None = None


@dataclasses.dataclass
class Memory:
    """Bytes per GPU by part; `peak` is what the job needs, `fits` compares it with the GPU."""

    params_total: int
    params_trainable: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float  # transient at the loss: logits, their fp32 copy and gradient
    overhead: float
    world: int
    strategy: str

    @property
    def peak(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits + self.overhead

    @property
    def peak_gb(self) -> float:
        return self.peak / GB

    BYTE_FIELDS = ("weights", "gradients", "optimizer", "activations", "logits", "overhead")

    def to_json(self) -> dict[str, Any]:
        """Every memory term in GB (10^9 bytes), named `<term>_gb`; counts and the strategy as they are."""
        d: dict[str, Any] = {"unit": MEMORY_UNIT, "params_total": self.params_total,
                             "params_trainable": self.params_trainable}
        d.update({f"{k}_gb": round(float(getattr(self, k)) / GB, 3) for k in self.BYTE_FIELDS})
        d["peak_gb"] = round(self.peak_gb, 3)
        d.update(world=self.world, strategy=self.strategy)
        return d


# --------------------------------------------------------------------------- parameters

def trainable_params(shape: Shape, w: Workload) -> int:
    """Parameters the technique trains (peft's count for the trainer's defaults)."""
    t = w.technique
    if t is Technique.FULL:
        return shape.params + _head_swap(shape, w)
    head = _cls_head(shape, w)
    if t in LORA_FAMILY:
        n = sum(w.lora_r * (i + o) for _, i, o in _lora_modules(shape, w)) * shape.num_layers
        if t is Technique.DORA:
            n += sum(o for _, _, o in _lora_modules(shape, w)) * shape.num_layers
        return n + head
    if t is Technique.IA3:  # keys, values (out features) and the MLP down projection (in features)
        return shape.num_layers * (2 * shape.kv_dim + shape.intermediate_size) + head
    if t is Technique.PROMPT:
        return w.num_virtual_tokens * shape.hidden_size + head
    if t is Technique.PTUNING:
        e, h = w.encoder_hidden_size, shape.hidden_size
        return w.num_virtual_tokens * h + (h * e + e) + (e * e + e) + (e * h + h) + head
    if t is Technique.PREFIX:
        return w.num_virtual_tokens * shape.num_layers * 2 * shape.kv_dim + head
    if t is Technique.ADAPTER:
        b = shape.hidden_size // w.adapter_reduction
        return shape.num_layers * (2 * shape.hidden_size * b + b + shape.hidden_size) + head
    raise ValueError(t)


def _lora_modules(shape: Shape, w: Workload) -> list[tuple[str, int, int]]:
    if w.lora_targets in (None, "all-linear"):
        return shape.linears()
    wanted = set(w.lora_targets)
    return [m for m in shape.linears() if m[0] in wanted or m[0].split(".")[-1] in wanted]


def _cls_head(shape: Shape, w: Workload) -> int:
    """A sequence-classification head (trained by every technique; peft's modules_to_save)."""
    return shape.hidden_size * w.num_labels if w.task in SEQ_CLS_TASKS else 0


def _head_swap(shape: Shape, w: Workload) -> int:
    """Full fine-tuning of a classifier: the LM head is replaced by the score layer."""
    if w.task not in SEQ_CLS_TASKS:
        return 0
    return _cls_head(shape, w) - shape.head_params()


def base_params(shape: Shape, w: Workload) -> int:
    return shape.params + _head_swap(shape, w)


# --------------------------------------------------------------------------- memory

def memory(shape: Shape, w: Workload, world: int = 1, strategy: str | None = None) -> Memory:
    """Peak bytes per GPU when training on `world` GPUs with `strategy` (ddp, zero1, zero2, zero3/fsdp)."""
    strategy = strategy or choose_strategy(w, world)
    cb = compute_bytes(w)
    trainable = trainable_params(shape, w)
    total_base = base_params(shape, w)
    t = w.technique
    if t is Technique.FULL:
        weights = 4.0 * total_base
        grads = 4.0 * trainable
    elif t is Technique.QLORA:
        linear = shape.linear_params()
        weights = NF4_BYTES[w.double_quant] * linear + 4.0 * (total_base - linear) + 4.0 * trainable
        grads = 4.0 * trainable
    else:
        weights = cb * total_base + 4.0 * trainable
        grads = 4.0 * trainable
    opt = optimizer_bytes(shape, w, trainable)
    if world > 1:
        if strategy in ("zero1", "zero2", "zero3", "fsdp"):
            opt /= world
        if strategy in ("zero2", "zero3", "fsdp"):
            grads /= world
        if strategy in ("zero3", "fsdp"):
            frozen = weights - 4.0 * trainable if t is not Technique.FULL else 0.0
            gathered = 2 * _layer_bytes(shape, w)  # the layer being computed and the one prefetched
            weights = weights / world + gathered if t is Technique.FULL else frozen / world + 4.0 * trainable / world + gathered
        if strategy == "ddp":
            grads *= 2  # DDP's gradient buckets hold a second copy
    acts = activation_bytes(shape, w)
    logits = logits_bytes(shape, w)
    subtotal = weights + grads + opt + acts + logits
    overhead = RUNTIME_OVERHEAD_BYTES + FRAGMENTATION * subtotal
    params_total = total_base if t is Technique.FULL else total_base + trainable
    return Memory(params_total=params_total, params_trainable=trainable, weights=weights, gradients=grads,
                  optimizer=opt, activations=acts, logits=logits, overhead=overhead, world=world, strategy=strategy)


def choose_strategy(w: Workload, world: int) -> str:
    """auto: DDP for one GPU or a peft technique; FSDP full-shard (ZeRO-3) for full fine-tuning on several."""
    if world <= 1:
        return "single"
    if w.distributed in ("fsdp", "deepspeed"):
        return "zero3"
    if w.distributed == "ddp":
        return "ddp"
    return "zero3" if w.technique is Technique.FULL else "ddp"


def compute_bytes(w: Workload) -> int:
    return 4 if w.precision == "fp32" else 2


def optimizer_bytes(shape: Shape, w: Workload, trainable: int) -> float:
    """Optimizer state: AdamW's two fp32 moments (8 bytes per trainable parameter), 8-bit Adam's two 8-bit
    moments with a fp32 scale per 256-value block, none for plain SGD (momentum 0, the trainer's setting), plus
    the step counter AdamW keeps per tensor."""
    steps = STEP_BYTES.get(w.optimizer, 0) * trainable_tensors(shape, w)
    if w.optimizer == "adafactor":  # factored second moment: rows + columns per matrix, no first moment
        if w.technique is Technique.FULL:
            mats = sum(i + o for _, i, o in shape.linears()) * shape.num_layers + 2 * (shape.vocab_size + shape.hidden_size)
            return 4.0 * (mats + (trainable - shape.linear_params() - shape.embedding_params() - shape.head_params()))
        return 4.0 * trainable
    return OPTIMIZER_BYTES[w.optimizer] * trainable + steps


def trainable_tensors(shape: Shape, w: Workload) -> int:
    """How many parameter tensors train (each carries one optimizer step counter)."""
    t = w.technique
    head = 1 if w.task in SEQ_CLS_TASKS else 0
    if t is Technique.FULL:
        norms = (2 + shape.extra_norms_per_layer) * (2 if shape.norm == "layer" else 1)
        per_layer = len(shape.linears()) + norms + (2 if shape.qk_norm else 0)
        if shape.attention_bias:
            per_layer += 3
        if shape.mlp_bias:
            per_layer += len(shape.linears())
        final = 2 if shape.norm == "layer" else 1
        lm = 1 if w.task in SEQ_CLS_TASKS else (0 if shape.tie_embeddings else 1)
        return 1 + (1 if shape.max_positions else 0) + shape.num_layers * per_layer + final + lm
    if t in LORA_FAMILY:
        per_module = 3 if t is Technique.DORA else 2
        return shape.num_layers * per_module * len(_lora_modules(shape, w)) + head
    if t is Technique.IA3:
        return 3 * shape.num_layers + head
    if t is Technique.PTUNING:
        return 1 + 6 + head
    if t is Technique.ADAPTER:
        return 4 * shape.num_layers + head
    return 1 + head


def _layer_bytes(shape: Shape, w: Workload) -> float:
    return compute_bytes(w) * shape.layer_params()


def activation_bytes(shape: Shape, w: Workload) -> float:
    """Bytes saved for the backward pass over the whole forward (one micro-batch), per GPU.

    Per layer and token, counted tensor by tensor for a Llama-style block (docs/estimator.md lists them);
    with gradient checkpointing only each layer's input is kept, plus one layer's tensors while it is
    recomputed."""
    tokens = w.batch_size * (w.seq_len + (w.num_virtual_tokens if w.technique in (Technique.PROMPT, Technique.PTUNING) else 0))
    per_layer = tokens * layer_activation_bytes(shape, w)
    head = tokens * _final_bytes(shape, w)
    if w.gradient_checkpointing:
        return shape.num_layers * tokens * shape.hidden_size * residual_bytes(w) + per_layer + head
    return shape.num_layers * per_layer + head


def residual_bytes(w: Workload) -> int:
    """The residual stream's dtype: fp32 for full fine-tuning (fp32 weights under autocast), else the compute dtype."""
    return 4 if w.technique is Technique.FULL else compute_bytes(w)


def layer_activation_bytes(shape: Shape, w: Workload) -> float:
    """Bytes one layer saves for backward, per token."""
    h, q, kv, f = shape.hidden_size, shape.q_dim, shape.kv_dim, shape.intermediate_size
    cb = compute_bytes(w)
    full = w.technique is Technique.FULL
    # norms: the fp32 input RMSNorm upcasts to (kept by pow and mul) and, when the weight trains, the output
    n = 2 * (4 * h + (cb * h if full else 0))
    # attention: rotated q and k, v, the attention output (SDPA/flash keep these plus a log-sum-exp per head)
    n += cb * (q + 2 * kv + q) + 4 * shape.num_heads
    if w.attention == "eager":
        n += cb * shape.num_heads * w.seq_len  # the softmax probabilities (kept by softmax and by the matmul with v)
    # MLP: gate (for the activation), activation and up (for the product)
    n += cb * (3 * f if shape.gated_mlp else f)
    if full:  # trainable linears keep their inputs: o_proj's input and down_proj's input
        n += cb * (q + f)
    else:
        n += _adapter_activation_bytes(shape, w)
    return n


def _adapter_activation_bytes(shape: Shape, w: Workload) -> float:
    """What peft's modules add per token and layer: LoRA keeps each adapted linear's (dropped-out, fp32) input
    and the r-dimensional output of A; IA3 keeps the scaled tensors' inputs; the others add little."""
    cb = compute_bytes(w)
    if w.technique in LORA_FAMILY:
        n = 0.0
        seen_inputs: set[str] = set()
        for name, i, o in _lora_modules(shape, w):
            group = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "gate_proj": "mlp_in",
                     "up_proj": "mlp_in"}.get(name, name)
            if w.lora_dropout > 0:
                n += 4 * i + 1 * i  # fp32 dropped-out copy and its mask
            elif cb != 4:
                n += 4 * i  # fp32 cast of the input
            elif group not in seen_inputs:
                n += 4 * i  # the input itself, shared by q/k/v (or gate/up)
            seen_inputs.add(group)
            n += 4 * w.lora_r
            if w.technique is Technique.DORA:
                n += 4 * o  # DoRA's weight-norm path keeps the base output
        return n
    if w.technique is Technique.IA3:
        return cb * (2 * shape.kv_dim + shape.intermediate_size)
    return 0.0


def _final_bytes(shape: Shape, w: Workload) -> float:
    """Final norm plus the log-softmax output the cross-entropy keeps (fp32, vocabulary wide)."""
    cb = compute_bytes(w)
    full = w.technique is Technique.FULL
    n = 4 * shape.hidden_size + (cb * shape.hidden_size if full else 0)
    if w.task in SEQ_CLS_TASKS:
        return n
    return n + 4 * shape.vocab_size


def logits_bytes(shape: Shape, w: Workload) -> float:
    """The loss's transient peak: logits in the compute dtype, their fp32 copy, and the fp32 gradient."""
    if w.task in SEQ_CLS_TASKS:
        return 0.0
    cb = compute_bytes(w)
    per_token = shape.vocab_size * (cb + 4 + (4 if cb != 4 else 0))
    return w.batch_size * w.seq_len * per_token


def usable_gb(gpu: gpu_catalog.GPU) -> float:
    """The memory a job may plan to use on `gpu`: HEADROOM of what the driver reports."""
    return gpu.memory_gb * HEADROOM


def fits(mem: Memory, gpu: gpu_catalog.GPU) -> bool:
    """True when the predicted peak is within HEADROOM (90 %) of the GPU's memory."""
    return mem.peak <= usable_gb(gpu) * GB


# --------------------------------------------------------------------------- making it fit

@dataclasses.dataclass
class Change:
    """One way to make the job fit: what to change, every spec setting that changes, and the resulting peak."""

    what: str
    spec_change: str  # the --set/--gpu flags that do it: every setting that differs, so following it gives peak_gb
    peak_gb: float
    gpu: str
    gpus: int  # GPUs in all (per node x nodes)
    overrides: tuple[str, ...] = ()  # the same as `KEY=VALUE` items for spec.apply_override


# Workload field -> the spec key that sets it (what a hint must change for the job to be the one planned).
SPEC_KEYS = {"technique": "technique", "gradient_checkpointing": "hyperparameters.gradient_checkpointing",
             "batch_size": "hyperparameters.batch_size", "grad_accum": "hyperparameters.grad_accum",
             "optimizer": "hyperparameters.optimizer", "distributed": "resources.distributed"}


def change_overrides(w: Workload, w2: Workload, gpu: gpu_catalog.GPU | None = None, world: int | None = None,
                     now_world: int = 1, now_gpu: gpu_catalog.GPU | None = None) -> tuple[str, ...]:
    """`KEY=VALUE` overrides that turn the spec behind `w` (on now_world x now_gpu) into `w2` on world x gpu."""
    out = []
    for field, key in SPEC_KEYS.items():
        a, b = getattr(w, field), getattr(w2, field)
        if a != b:
            value = b.value if isinstance(b, Technique) else str(b).lower() if isinstance(b, bool) else b
            out.append(f"{key}={value}")
    if gpu is not None and world is not None and (gpu is not now_gpu or world != now_world):
        per_node, nodes = (world, 1) if world <= 8 else (8, world // 8)
        out.append(f"resources.gpu={gpu.name.lower()}:{per_node}")
        out.append(f"resources.nodes={nodes}")
    return tuple(out)


def _flags(overrides: tuple[str, ...]) -> str:
    parts = []
    for item in overrides:
        key, _, value = item.partition("=")
        parts.append(f"--gpu {value}" if key == "resources.gpu" else f"--set {item}")
    return " ".join(parts)


def make_fit(shape: Shape, w: Workload, gpu: gpu_catalog.GPU, world: int = 1, limit: int = 3) -> list[Change]:
    """Changes that make the job fit, cheapest first: checkpointing, a smaller micro-batch, 8-bit Adam, a
    lighter technique, more GPUs of this kind (sharded with FSDP, LoRA and QLoRA included), a bigger GPU.
    Each names every setting it changes (`overrides`), so the caller can re-plan it before printing."""
    out: list[Change] = []

    def attempt(what: str, w2: Workload, g: gpu_catalog.GPU = gpu, n: int = world) -> bool:
        m = memory(shape, w2, n)
        if fits(m, g):
            ov = change_overrides(w, w2, g, n, world, gpu)
            out.append(Change(what, _flags(ov), round(m.peak_gb, 2), g.name, n, ov))
            return True
        return False

    if not w.gradient_checkpointing:
        attempt("turn on gradient checkpointing (about 33% more compute)",
                dataclasses.replace(w, gradient_checkpointing=True))
    cur = dataclasses.replace(w, gradient_checkpointing=True)
    b = w.batch_size
    while b > 1 and len(out) < limit:
        b //= 2
        ga = w.grad_accum * (w.batch_size // b)
        if attempt(f"micro-batch {b} with grad_accum {ga} (same effective batch)",
                   dataclasses.replace(cur, batch_size=b, grad_accum=ga)):
            break
    small = dataclasses.replace(cur, batch_size=1, grad_accum=w.grad_accum * w.batch_size)
    if w.optimizer == "adamw" and w.technique is Technique.FULL:
        attempt("8-bit AdamW, micro-batch 1", dataclasses.replace(small, optimizer="adamw_8bit"))
    if w.technique is Technique.FULL:
        attempt("LoRA instead of full fine-tuning, micro-batch 1", dataclasses.replace(small, technique=Technique.LORA))
    if w.technique is not Technique.QLORA:
        attempt("QLoRA (4-bit base), micro-batch 1", dataclasses.replace(small, technique=Technique.QLORA))
    for n in (2, 4, 8, 16, 32, 64):
        if n > world and attempt(f"{n} x {gpu.name} sharded (FSDP{' + ' + w.technique.value if w.technique is not Technique.FULL else ''})",
                                 dataclasses.replace(cur, distributed="fsdp"), gpu, n):
            break
    for g in sorted(gpu_catalog.GPUS, key=lambda g: g.memory_gb):
        if g.memory_gb > gpu.memory_gb and attempt(f"a bigger GPU: {g.name} ({g.memory_gb:.1f} GB)", w, g, world):
            break
    return out


# --------------------------------------------------------------------------- tokens and time

@dataclasses.dataclass
class Tokens:
    low: float
    high: float
    how: str


def count_tokens(path: str | None, w: Workload, *, max_samples: int | None = None, world: int = 1) -> Tokens:
    """Training tokens per epoch: counted from a local file (characters / 3.5-4.5, each row capped at
    max_length), from max_steps, or assumed (DEFAULT_ROWS rows of half max_length) when neither is known."""
    if w.max_steps:
        n = w.max_steps * w.batch_size * w.grad_accum * world * w.seq_len
        return Tokens(n * 0.5, n, f"max_steps {w.max_steps} x batch {w.batch_size} x grad_accum {w.grad_accum} x "
                                  f"{world} GPU(s) x up to {w.seq_len} tokens")
    rows, why = _local_rows(path) if path else (None, "no data path")
    if rows is not None:
        if max_samples:
            rows = rows[:max_samples]
        lo = sum(min(c / CHARS_PER_TOKEN[0], w.seq_len) for c in rows)
        hi = sum(min(c / CHARS_PER_TOKEN[1], w.seq_len) for c in rows)
        return Tokens(lo, hi, f"counted: {len(rows)} rows in {Path(path).name}, {CHARS_PER_TOKEN[1]}-"
                              f"{CHARS_PER_TOKEN[0]} characters per token, capped at {w.seq_len}")
    n_rows = max_samples or DEFAULT_ROWS
    return Tokens(n_rows * w.seq_len * 0.25, n_rows * w.seq_len * 0.75,
                  f"assumed: {why}; {n_rows} rows of 25-75% of max_length {w.seq_len} tokens")


COUNTED = (".jsonl", ".json", ".csv", ".txt")  # what _local_rows counts
COUNT_MAX_ENTRIES = 10_000  # entries of a data folder looked at: `dataset.path: /` must not walk the disk
COUNT_MAX_BYTES = 256 * 2**20  # bytes read to count rows; more, and the estimate assumes


def _local_rows(path: str) -> tuple[list[int] | None, str]:
    """Characters per row of a local .jsonl/.json/.csv/.txt file, or of the files directly in a folder (the
    ones the trainer reads), within COUNT_MAX_ENTRIES folder entries and COUNT_MAX_BYTES read; else None and
    why not (the note the assumed estimate carries)."""
    p = Path(path).expanduser()
    if "://" in path or not p.exists():
        return None, "data not local"
    try:
        if p.is_dir():
            with os.scandir(p) as entries:
                seen = list(itertools.islice(entries, COUNT_MAX_ENTRIES + 1))
            if len(seen) > COUNT_MAX_ENTRIES:
                return None, (f"{p} holds over {COUNT_MAX_ENTRIES:,} entries, not counted (point dataset.path at "
                              "the folder of the data files)")
            files = sorted(Path(e.path) for e in seen if Path(e.name).suffix in COUNTED and e.is_file())
        else:
            files = [p]
        if any(f.suffix not in COUNTED or not stat.S_ISREG(f.stat().st_mode) for f in files):
            return None, f"{p} is not a {', '.join(COUNTED)} file, not counted"
        size = sum(f.stat().st_size for f in files)
        if size > COUNT_MAX_BYTES:
            return None, f"{size / 1e6:,.0f} MB of data, more than the {COUNT_MAX_BYTES / 1e6:,.0f} MB counted here"
        rows: list[int] = []
        for f in files:
            rows += _rows_of(f)
    except (OSError, ValueError):
        return None, f"{p} could not be read"
    return (rows, "") if rows else (None, f"no rows found in {p}")


def _rows_of(f: Path) -> list[int]:
    text = f.read_text(encoding="utf-8", errors="replace")
    if f.suffix == ".json":
        data = json.loads(text)
        items = data if isinstance(data, list) else next((v for v in data.values() if isinstance(v, list)), []) \
            if isinstance(data, dict) else []
        return [len(json.dumps(item, ensure_ascii=False)) for item in items]
    if f.suffix == ".csv":
        return [len(line) for line in text.splitlines()[1:] if line.strip()]
    return [len(line) for line in text.splitlines() if line.strip()]


def flops_per_token(shape: Shape, w: Workload) -> float:
    """Training FLOPs per token: 6N for full training (2N forward, 4N backward), 4N when the base is frozen
    (no weight gradients), +2N with recomputation, plus attention (4 s d per layer forward) and the adapters."""
    n_matmul = shape.linear_params() + shape.vocab_size * shape.hidden_size  # the embedding lookup is free
    attn_fwd = 4 * w.seq_len * shape.q_dim * shape.num_layers / 2  # causal: half the scores
    frozen = w.technique is not Technique.FULL
    forward = 2 * n_matmul + attn_fwd
    backward = (2 if frozen else 4) * n_matmul + 2 * attn_fwd
    recompute = forward if w.gradient_checkpointing else 0.0
    adapters = 6 * trainable_params(shape, w) if frozen else 0.0
    return forward + backward + recompute + adapters


def mfu(w: Workload, shape: Shape, gpu: gpu_catalog.GPU, world: int, nodes: int = 1) -> tuple[float, float]:
    """Model-FLOPs utilisation (low, high) for the technique on this GPU and world size; see docs/estimator.md."""
    key = "full" if w.technique is Technique.FULL else "qlora" if w.technique is Technique.QLORA else "peft"
    lo, hi = MFU[key]
    scale = 1.0
    if shape.params < 1e9:
        scale *= 0.5  # small matrices do not fill the tensor cores
    if w.technique is Technique.DORA:
        scale *= 0.8
    if world > 1:
        scale *= 0.9 if gpu.nvlink else 0.75
    if nodes > 1:
        scale *= 0.85
    return lo * scale, hi * scale


@dataclasses.dataclass
class TimeEstimate:
    tokens: Tokens
    flops: tuple[float, float]
    compute_hours: tuple[float, float]
    startup_hours: tuple[float, float]
    mfu: tuple[float, float]

    @property
    def hours(self) -> tuple[float, float]:
        return (self.compute_hours[0] + self.startup_hours[0], self.compute_hours[1] + self.startup_hours[1])


def time(shape: Shape, w: Workload, gpu: gpu_catalog.GPU, world: int, tokens: Tokens, target: str = "skypilot",
         nodes: int = 1) -> TimeEstimate:
    """Wall-clock hours (low, high): training FLOPs / (GPUs x peak x MFU) plus start-up."""
    fpt = flops_per_token(shape, w)
    epochs = 1.0 if w.max_steps else w.epochs
    flops = (tokens.low * epochs * fpt, tokens.high * epochs * fpt)
    util = mfu(w, shape, gpu, world, nodes)
    peak = world * gpu.bf16_tflops * 1e12
    compute = (flops[0] / (peak * util[1]) / 3600, flops[1] / (peak * util[0]) / 3600)
    prov = backends.facts(target).startup_min  # provisioning, minutes (low, high): each backend's FACTS
    weights_gb = 2 * shape.params / GB
    startup = ((prov[0] * 60 + IMAGE_GB / 0.5 + weights_gb / DOWNLOAD_GBPS[0]) / 3600,
               (prov[1] * 60 + IMAGE_GB / 0.1 + weights_gb / DOWNLOAD_GBPS[1]) / 3600)
    if target == "local":
        startup = (prov[0] / 60, prov[1] / 60 + weights_gb / DOWNLOAD_GBPS[1] / 3600)
    return TimeEstimate(tokens, flops, compute, startup, util)


# --------------------------------------------------------------------------- from a spec

def workload_from_spec(spec: Any, gpu: gpu_catalog.GPU | None = None) -> Workload:
    """The estimator's view of a Spec; precision 'auto' is bf16 where the GPU has it, else fp16."""
    hp = spec.hyperparameters
    t = spec.technique
    settings = spec.technique_settings
    precision = hp.precision
    if precision == "auto":
        precision = "bf16" if gpu is None or gpu.bf16 else "fp16"
    ckpt = hp.gradient_checkpointing
    if ckpt is None:
        ckpt = t is not Technique.PREFIX
    kw: dict[str, Any] = {}
    if t in LORA_FAMILY:
        kw.update(lora_r=settings.r, lora_targets=settings.target_modules or "all-linear",
                  lora_dropout=settings.dropout)
    if t is Technique.QLORA:
        kw["double_quant"] = settings.double_quant
    if t in (Technique.PREFIX, Technique.PROMPT, Technique.PTUNING):
        kw["num_virtual_tokens"] = settings.num_virtual_tokens
    if t is Technique.PTUNING:
        kw["encoder_hidden_size"] = settings.encoder_hidden_size
    if t is Technique.ADAPTER:
        kw["adapter_reduction"] = settings.reduction_factor
    labels = getattr(spec.task_settings, "labels", None)
    return Workload(technique=t, task=spec.task, batch_size=hp.batch_size, seq_len=hp.max_length,
                    grad_accum=hp.grad_accum, optimizer=hp.optimizer, precision=precision,
                    gradient_checkpointing=bool(ckpt), num_labels=len(labels) if labels else (1 if spec.task is Task.REWARD else 2),
                    distributed=spec.resources.distributed, epochs=hp.epochs, max_steps=hp.max_steps, **kw)


def compare_techniques(model: str = "Qwen/Qwen2.5-7B") -> list[dict[str, object]]:
    """What differs between techniques for one model: trainable share (trainable / all parameters of the
    model being trained, the one definition the bench uses too), peak GB on one GPU, and the use cases
    that start with it."""
    from ftlaunch.planning import shapes

    shape = shapes.resolve(model)
    out = []
    for t in Technique:
        mem = memory(shape, Workload(technique=t))
        out.append({"technique": t.value, "trainable_params": mem.params_trainable, "total_params": mem.params_total,
                    "trainable_percent": trainable_percent(mem.params_trainable, mem.params_total),
                    "peak_gb": round(mem.peak_gb, 1),
                    "use_cases": [u for u, (_, order) in USE_CASES.items() if t in order]})
    return out


def hardware_table(shape: Shape, techniques: Iterable[Technique], w: Workload | None = None,
                   counts: tuple[int, ...] = (1, 2, 4, 8)) -> list[dict[str, Any]]:
    """For `ftlaunch gpus --model X`: per technique and GPU, the peak on one GPU and the fewest GPUs that fit."""
    base = w or Workload()
    rows = []
    for t in techniques:
        wt = dataclasses.replace(base, technique=t)
        for g in gpu_catalog.GPUS:
            if g.name.startswith("V100"):
                continue
            one = memory(shape, wt, 1)
            need = next((n for n in counts if fits(memory(shape, wt, n), g)), None)
            rows.append({"technique": t.value, "gpu": g.name, "gpu_memory_gb": round(g.memory_gb, 1),
                         "peak_gb_one_gpu": round(one.peak_gb, 1), "fits_one_gpu": fits(one, g),
                         "gpus_needed": need, "trainable_params": one.params_trainable})
    return rows


def round_up(x: float, step: float) -> float:
    return math.ceil(x / step) * step
