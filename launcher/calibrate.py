"""This machine's measured training speed, for local time estimates (`--cloud local`).

A cloud offer's hours come from the GPU's datasheet and an assumed utilisation; this machine's come from a
measurement: a few optimizer steps of a small Llama built (no download) in the model's proportions, on the
device the local run would use. The achieved FLOP/s (our FLOPs formula over the measured step time) is
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

from ftlaunch import estimator, jobs
from ftlaunch.shapes import Shape
from ftlaunch.techniques import Technique

CAP_HIDDEN, CAP_LAYERS, CAP_VOCAB = 256, 2, 4096  # the calibration model: the model's proportions, capped
STEPS, WARMUP, BATCH, SEQ = 3, 1, 2, 64


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


def size_key(shape: Shape) -> str:
    c = calibration_shape(shape)
    return f"h{c.hidden_size}-f{c.intermediate_size}-l{c.num_layers}-v{c.vocab_size}"


@dataclasses.dataclass
class Calibration:
    flops_per_s: float  # achieved training FLOP/s, our formula over the measured step time
    step_s: float
    device: str
    shape: str
    measured_at: str


def measure(shape: Shape) -> Calibration:
    """Times STEPS AdamW steps (after WARMUP) of the calibration model, full fine-tuning, micro-batch BATCH x SEQ."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    c = calibration_shape(shape)
    device = "cuda" if local_gpus() and torch.cuda.is_available() else "cpu"
    config = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                         num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                         num_key_value_heads=c.num_kv_heads, max_position_embeddings=SEQ,
                         tie_word_embeddings=c.tie_embeddings)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, c.vocab_size, (BATCH, SEQ), device=device)

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(WARMUP):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - start) / STEPS
    w = estimator.Workload(technique=Technique.FULL, batch_size=BATCH, seq_len=SEQ, gradient_checkpointing=False)
    flops = estimator.flops_per_token(c, w) * BATCH * SEQ
    return Calibration(flops / step_s, step_s, device, size_key(shape), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def get(shape: Shape, *, measure_if_missing: bool = True) -> Calibration | None:
    """The cached calibration for this machine and model size; measured (and cached) when missing.
    None when it is missing and cannot be measured (no torch here, or measure_if_missing False)."""
    path = cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    key = f"{machine_key()}|{size_key(shape)}"
    if key in data:
        return Calibration(**data[key])
    if not measure_if_missing:
        return None
    try:
        cal = measure(shape)
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
    lo, hi = estimator.STARTUP_MIN["local"]
    return {"hours": (compute[0] + lo / 60, compute[1] + hi / 60), "compute_hours": compute,
            "flops_per_s": cal.flops_per_s, "device": cal.device, "calibrated": cal.measured_at,
            "how": f"measured on this machine ({cal.device}): {cal.flops_per_s / 1e9:.1f} GFLOP/s on a "
                   f"{cal.shape} model, cached in {cache_path()}"}
