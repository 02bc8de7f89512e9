"""What every task shares: the job's context, the model with its technique applied, TrainingArguments from
the spec, fitting with resume and preemption, the weights written to outputs, and the summary's common part."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
from pathlib import Path
from typing import Any

from ftlaunch.core import errors, models
from ftlaunch.core import spec as spec_mod
from ftlaunch.containers.trainer import adapters, checkpoints, contract, distributed, loading, outputs, peft_setup
from ftlaunch.core.techniques import DEFAULT_LEARNING_RATE, LORA_FAMILY, Technique

TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}


@dataclasses.dataclass
class Job:
    """One run of the trainer: the spec and where it reads and writes, the device and precision chosen."""

    spec: spec_mod.Spec
    paths: contract.Paths
    out: Path
    device: str
    precision: str
    world_size: int
    rank: int
    guard: checkpoints.Guard
    resume_from: Path | None = None
    metrics: Any = None  # the metrics callback
    model: Any = None  # the trained model, once training ends

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def ref(self) -> models.ModelRef:
        return models.resolve(self.spec.model)

    def log(self, message: str) -> None:
        if self.is_main:
            outputs.log(message)


def torch_dtype(job: Job) -> Any:
    """Weights' dtype: fp32 for full fine-tuning (mixed precision keeps a float32 master copy) and on CPU."""
    import torch

    if job.precision == "fp32" or job.spec.technique is Technique.FULL:
        return torch.float32
    return torch.bfloat16 if job.precision == "bf16" else torch.float16


def quantization(job: Job) -> Any:
    """bitsandbytes 4-bit settings for QLoRA (NF4 by default); None for every other technique."""
    if job.spec.technique is not Technique.QLORA:
        return None
    import torch

    s = job.spec.technique_settings
    compute = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(
        s.compute_dtype) or (torch.bfloat16 if job.precision == "bf16" else
                             torch.float16 if job.precision == "fp16" else torch.float32)
    sharded = job.world_size > 1 and _strategy(job) == "fsdp"
    return loading.bnb_config(s, compute, sharded=sharded)


def load_base(job: Job, tokenizer: Any, num_labels: int | None = None, label_names: list[str] | None = None) -> Any:
    """The base model for the task, quantised for QLoRA, with the pad token set for sequence-level heads."""
    t0 = time.time()
    model = loading.load_model(job.ref, job.spec.task, job.spec.technique, torch_dtype(job),
                               num_labels=num_labels, label_names=label_names, quantization=quantization(job))
    if getattr(model.config, "pad_token_id", None) is None and tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if job.device == "cuda" and quantization(job) is None and job.world_size == 1:
        model.to("cuda")
    job.log(f"model loaded in {time.time() - t0:.1f} s")
    return model


def apply_technique(job: Job, model: Any) -> Any:
    """Wraps the model for the spec's technique and logs the trainable parameter count."""
    technique = job.spec.technique
    settings = job.spec.technique_settings
    if technique is Technique.ADAPTER:
        model = adapters.apply(model, settings.reduction_factor, settings.nonlinearity, settings.dropout)
    else:
        model = peft_setup.apply(model, technique, settings, job.spec.task)
    trainable, total = peft_setup.count_parameters(model)
    job.log(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)")
    return model


def training_args(job: Job, has_eval: bool, **extra: Any) -> dict[str, Any]:
    """Keyword arguments shared by every task's Trainer config, from the spec's hyperparameters."""
    spec = job.spec
    hp = spec.hyperparameters
    checkpointing = hp.gradient_checkpointing
    if checkpointing is None:
        checkpointing = job.device == "cuda" and spec.technique not in (Technique.PREFIX, Technique.PTUNING)
    args = dict(
        output_dir=job.paths.checkpoint_dir,
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.grad_accum,
        learning_rate=hp.learning_rate or DEFAULT_LEARNING_RATE[spec.technique],
        num_train_epochs=hp.epochs,
        max_steps=hp.max_steps or -1,
        lr_scheduler_type=hp.lr_scheduler,
        warmup_steps=hp.warmup_ratio,
        weight_decay=hp.weight_decay,
        optim={"adamw": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit", "sgd": "sgd",
               "adafactor": "adafactor"}[hp.optimizer],
        seed=hp.seed,
        data_seed=hp.seed,
        bf16=job.precision == "bf16",
        fp16=job.precision == "fp16",
        use_cpu=job.device == "cpu",
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        logging_steps=hp.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if (has_eval and hp.eval_steps) else "no",
        eval_steps=hp.eval_steps,
        save_strategy="steps" if hp.save_steps else "no",
        save_steps=hp.save_steps or 500,
        save_total_limit=None,
        report_to=trackers(job),
        disable_tqdm=True,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
    )
    if spec.tracking.project:
        args["project"] = spec.tracking.project
    block = _block_class(job)
    args.update(distributed.strategy_args(_strategy(job), job.device, job.world_size, block))
    args.update(extra)
    return args


def packing_strategy(job: Job) -> str:
    """How sft packs rows. With flash-attention on a GPU: best-fit-decreasing, padding-free (one flat
    sequence per batch, attention kept within each row by varlen kernels). Elsewhere (CPU, SDPA) a flat
    sequence makes attention quadratic in the whole batch, so rows are packed into max_length chunks
    ("wrapped"): no padding at all, at the price of rows split across chunk boundaries."""
    if job.device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "bfd"
    return "wrapped"


def _strategy(job: Job) -> str:
    strategy = job.spec.resources.distributed
    if strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise errors.UserError("resources.distributed: deepspeed is not installed in this image.",
                               hint="pip install deepspeed in the image, or use distributed: fsdp")
    if strategy in ("fsdp", "deepspeed") and job.device != "cuda":
        job.log(f"resources.distributed={strategy} needs GPUs; using DDP on CPU")
        return "ddp"
    return strategy


def _block_class(job: Job) -> str | None:
    return None  # FSDP's TRANSFORMER_BASED_WRAP finds the model's `_no_split_modules` itself


def trackers(job: Job) -> list[str] | str:
    """The spec's report_to, keeping those whose package is installed. Keys come from the environment
    (the spec's `secrets` names), never from the spec; wandb without a key logs offline."""
    chosen = []
    for name in job.spec.tracking.report_to:
        if any(importlib.util.find_spec(module) for module in TRACKERS[name]):
            chosen.append(name)
        else:
            job.log(f"tracking: {name} is not installed in this image; not reporting to it")
    if "wandb" in chosen and not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    if "mlflow" in chosen and not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = (job.out / "tracking" / "mlruns").resolve().as_uri()
    return chosen or "none"


def callbacks(job: Job) -> list[Any]:
    return [job.metrics, checkpoints.make_callback(job.guard, job.spec.hyperparameters.save_minutes)]


def make_trainer(job: Job, trainer_cls: type, **kwargs: Any) -> Any:
    """The task's Trainer class with atomic checkpoints, our callbacks, and transformers' printer removed."""
    from transformers.trainer_callback import PrinterCallback

    trainer = checkpoints.atomic(trainer_cls)(callbacks=callbacks(job), **kwargs)
    trainer.remove_callback(PrinterCallback)
    if job.spec.technique is Technique.QLORA:
        # trl casts QLoRA's trainable weights to bf16; keep them in the 4-bit layers' compute dtype so that
        # a trained head (classification, reward) sees the dtype its inputs arrive in
        compute = quantization(job).bnb_4bit_compute_dtype
        for param in trainer.model.parameters():
            if param.requires_grad and param.dtype != compute:
                param.data = param.data.to(compute)
    return trainer


def fit(job: Job, trainer: Any) -> Any:
    """Trains, resuming from the newest complete checkpoint; raises Preempted after a SIGTERM checkpoint."""
    resume = str(job.resume_from) if job.resume_from else None
    result = trainer.train(resume_from_checkpoint=resume)
    if job.guard.requested:
        raise checkpoints.Preempted(f"checkpoint saved at step {trainer.state.global_step}")
    return result


def evaluate(job: Job, trainer: Any, has_eval: bool) -> dict[str, Any]:
    """The final eval metrics. When eval_steps already evaluated the last step, those are the metrics
    (evaluating again would log and record the same line twice)."""
    if not has_eval:
        return {}
    step = trainer.state.global_step
    for entry in reversed(trainer.state.log_history):
        if entry.get("step") != step:
            break
        if any(key.startswith("eval_") for key in entry):
            return {key: value for key, value in entry.items() if key.startswith("eval_")}
    return trainer.evaluate()


def save_weights(job: Job, model: Any, tokenizer: Any) -> None:
    """weights/: the adapter (PEFT and bottleneck adapters) or the full model, in safetensors, plus the
    tokenizer; with output.merge, merged/ holds full weights for the LoRA family."""
    job.model = model
    if not job.is_main:
        return
    weights = job.out / "weights"
    if job.spec.technique is Technique.ADAPTER:
        adapters.save(model, weights)
    else:
        model.save_pretrained(weights, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(weights)
    if job.spec.output.merge and job.spec.technique in LORA_FAMILY:
        merged = merge(job, model, weights)
        merged.save_pretrained(job.out / "merged", safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(job.out / "merged")
        job.log(f"merged weights written to {job.out / 'merged'}")


def merge(job: Job, model: Any, weights: Path) -> Any:
    """The base model with the LoRA update folded in. For QLoRA the base is reloaded unquantised first,
    so the merged weights are not rounded to 4 bits."""
    if job.spec.technique is not Technique.QLORA:
        return model.merge_and_unload()
    import peft
    import torch

    base = loading.load_model(job.ref, job.spec.task, Technique.LORA, torch.float32,
                              num_labels=getattr(model.config, "num_labels", None))
    return peft.PeftModel.from_pretrained(base, str(weights)).merge_and_unload()


def summary(job: Job, model: Any, result: Any, **metrics: Any) -> dict[str, Any]:
    """The summary's common part: what ran, parameters, time, tokens and memory, then the task's metrics."""
    trainable, total = peft_setup.count_parameters(model)
    return {
        "task": job.spec.task.value,
        "technique": job.spec.technique.value,
        "model": job.spec.model,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100 * trainable / total,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "steps": result.global_step,
        "resumed_from_step": checkpoints.step_of(job.resume_from) if job.resume_from else None,
        "tokens_seen": int(job.metrics.tokens_seen),
        "peak_memory_bytes": outputs.peak_memory_bytes(),
        "peak_memory_gb": round(outputs.peak_memory_bytes() / 1e9, 3),  # GB = 10^9 bytes, as every ftlaunch figure
        "device": job.device,
        "precision": job.precision,
        "processes": job.world_size,
        "train_loss": result.training_loss,
        "final_train_loss": job.metrics.losses[-1] if job.metrics.losses else None,
        **metrics,
    }


def load_rows(job: Job) -> Any:
    """The training rows (columns renamed per the spec, capped at max_samples), every one checked."""
    from ftlaunch.containers.trainer import data

    spec = job.spec
    ds = data.load_split(spec.dataset.path, spec.dataset.split, data_dir=job.paths.data_dir, spec=spec)
    ds = data.rename_columns(ds, spec.dataset.columns)
    if spec.dataset.max_samples:
        ds = ds.select(range(min(spec.dataset.max_samples, len(ds))))
    if len(ds) == 0:
        raise errors.UserError(f"dataset {spec.dataset.path} has no rows.")
    data.check_rows(ds, spec, spec.dataset.path, job.paths.data_dir)
    return ds


def load_eval_rows(job: Job) -> Any:
    from ftlaunch.containers.trainer import data

    spec = job.spec
    if not spec.dataset.eval_path:
        return None
    ds = data.load_split(spec.dataset.eval_path, data_dir=job.paths.data_dir, spec=spec)
    ds = data.rename_columns(ds, spec.dataset.columns)
    data.check_rows(ds, spec, spec.dataset.eval_path, job.paths.data_dir)
    return ds


def split(job: Job, rows: Any, eval_rows: Any) -> tuple[Any, Any]:
    from ftlaunch.containers.trainer import data

    return data.train_eval(rows, job.spec.dataset.eval_split, job.spec.hyperparameters.seed, eval_rows)
