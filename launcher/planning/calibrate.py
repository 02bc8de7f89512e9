"""This machine's measured training speed, for local time estimates (`--cloud local`).

A cloud offer's hours come from the GPU's datasheet and an assumed utilisation; this machine's come from a
measurement: a few optimizer steps of a small Llama built (no download) in the model's proportions, trained
as the job trains (full or LoRA, with or without gradient checkpointing), on the device the local run would
use. On small models per-operation overhead, not FLOPs, sets the pace, so the technique matters. The achieved FLOP/s (our FLOPs formula over the measured step time) is
cached in $FTLAUNCH_HOME/calibration.json per machine and model size, so it is measured once; the local
estimate divides the job's FLOPs by it. torch and transformers are imported only when measuring.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from ftlaunch import backends
from ftlaunch.planning import estimator
from ftlaunch.core import jobs
from ftlaunch.planning.shapes import Shape
from ftlaunch.core.techniques import LORA_FAMILY, Technique

CAP_HIDDEN, CAP_LAYERS, CAP_VOCAB = 256, 2, 4096  # the calibration model: the model's proportions, capped
STEPS, WARMUP, BATCH, SEQ = 6, 2, 4, 128  # timed steps (the fastest counts), untimed ones, the largest micro-batch


def cache_path() -> Path:
    return jobs.home() / "calibration.json"


def local_gpus() -> list[str]:
    """Names of the NVIDIA GPUs the driver lists on this machine ([] when none), read from /proc: no torch."""
    root = Path(os.environ.get("FTLAUNCH_NVIDIA_PROC", "/proc/driver/nvidia/gpus"))
    names = []
    for info in sorted(root.glob("*/information")) if root.is_dir() else []:
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                names.append(line.split(":", 1)[1].strip())
    return names


def machine_key() -> str:
    gpus = local_gpus()
    device = f"cuda:{gpus[0]}" if gpus else f"cpu:{os.cpu_count()}"
    return f"{platform.node()}|{platform.machine()}|{platform.processor() or platform.system()}|{device}"


def calibration_shape(shape: Shape) -> Shape:
    """The model's proportions at a size that trains in well under a second."""
    hidden = min(shape.hidden_size, CAP_HIDDEN)
    heads = max(1, min(shape.num_heads, hidden // 16))
    while hidden % heads:
        heads -= 1
    kv = max(1, min(shape.num_kv_heads, heads))
    while heads % kv:
        kv -= 1
    ratio = shape.intermediate_size / shape.hidden_size
    return Shape(name=f"calibration-h{hidden}", vocab_size=min(shape.vocab_size, CAP_VOCAB), hidden_size=hidden,
                 num_layers=min(shape.num_layers, CAP_LAYERS), num_heads=heads, num_kv_heads=kv,
                 intermediate_size=max(8, int(hidden * ratio)), tie_embeddings=shape.tie_embeddings)


def _kind(w: estimator.Workload | None) -> tuple[str, bool]:
    """What the calibration trains: 'lora' for the LoRA family (QLoRA's 4-bit base is not measured: on a CPU it
    dequantises like LoRA's bf16 base), else 'full'; and whether it recomputes activations."""
    if w is None:
        return "full", False
    return ("lora" if w.technique in LORA_FAMILY else "full"), bool(w.gradient_checkpointing)


def size_key(shape: Shape, w: estimator.Workload | None = None) -> str:
    c = calibration_shape(shape)
    kind, ckpt = _kind(w)
    b, s = _batch(w)
    return (f"h{c.hidden_size}-f{c.intermediate_size}-l{c.num_layers}-v{c.vocab_size}-{kind}{'-ckpt' if ckpt else ''}"
            f"-b{b}x{s}")


def _batch(w: estimator.Workload | None) -> tuple[int, int]:
    """The job's micro-batch, capped at BATCH x SEQ (per-step overhead is amortised as in the job)."""
    return (min(w.batch_size, BATCH), min(w.seq_len, SEQ)) if w else (BATCH, SEQ)


@dataclasses.dataclass
class Calibration:
    flops_per_s: float  # achieved training FLOP/s, our formula over the measured step time
    step_s: float
    device: str
    shape: str
    measured_at: str


def measure(shape: Shape, w: estimator.Workload | None = None) -> Calibration:
    """Times STEPS AdamW steps (after WARMUP) of the calibration model, the job's micro-batch capped at BATCH x SEQ,
    trained the way
    the job trains (LoRA through peft for the LoRA family, else full; gradient checkpointing as the job)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    kind, ckpt = _kind(w)
    c = calibration_shape(shape)
    device = "cuda" if local_gpus() and torch.cuda.is_available() else "cpu"
    config = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                         num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                         num_key_value_heads=c.num_kv_heads, max_position_embeddings=SEQ,
                         tie_word_embeddings=c.tie_embeddings)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(device)
    if ckpt:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if kind == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=w.lora_r, lora_alpha=2 * w.lora_r, lora_dropout=w.lora_dropout,
                                                 target_modules="all-linear"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch, seq = _batch(w)
    ids = torch.randint(0, c.vocab_size, (batch, seq), device=device)

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(WARMUP):
        step()
    times = []
    for _ in range(STEPS):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step_s = min(times)  # the fastest step: what the machine does when nothing else competes for it
    wc = estimator.Workload(technique=Technique.LORA if kind == "lora" else Technique.FULL, batch_size=batch,
                            seq_len=seq, gradient_checkpointing=ckpt, lora_r=w.lora_r if w else 16)
    flops = estimator.flops_per_token(c, wc) * batch * seq
    return Calibration(flops / step_s, step_s, device, size_key(shape, w),
                       time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def get(shape: Shape, w: estimator.Workload | None = None, *, measure_if_missing: bool = True) -> Calibration | None:
    """The cached calibration for this machine and model size; measured (and cached) when missing.
    None when it is missing and cannot be measured (no torch here, or measure_if_missing False)."""
    path = cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    key = f"{machine_key()}|{size_key(shape, w)}"
    if key in data:
        return Calibration(**data[key])
    if not measure_if_missing:
        return None
    try:
        cal = measure(shape, w)
    except ImportError:
        return None
    data[key] = dataclasses.asdict(cal)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return cal


def local_hours(shape: Shape, w: estimator.Workload, tokens: estimator.Tokens, cal: Calibration) -> dict[str, Any]:
    """Hours (low, high) on this machine: the job's FLOPs over the measured FLOP/s, plus local start-up."""
    fpt = estimator.flops_per_token(shape, w)
    epochs = 1.0 if w.max_steps else w.epochs
    compute = (tokens.low * epochs * fpt / cal.flops_per_s / 3600, tokens.high * epochs * fpt / cal.flops_per_s / 3600)
    lo, hi = backends.facts("local").startup_min
    return {"hours": (compute[0] + lo / 60, compute[1] + hi / 60), "compute_hours": compute,
            "flops_per_s": cal.flops_per_s, "device": cal.device, "calibrated": cal.measured_at,
            "how": f"measured on this machine ({cal.device}): {cal.flops_per_s / 1e9:.1f} GFLOP/s on a "
                   f"{cal.shape} model, cached in {cache_path()}"}
