"""The trainer's main(): resolved spec in; metrics.jsonl, summary.json, weights/ and manifest.json out."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from ftlaunch import errors, models
from ftlaunch import spec as spec_mod
from ftlaunch.containers.trainer import contract, data, loading, outputs, peft_setup
from ftlaunch.techniques import DEFAULT_LEARNING_RATE, Task, Technique

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftlaunch.containers.trainer")
    parser.add_argument("--spec", default=os.environ.get("FTLAUNCH_SPEC_PATH"),
                        help="the resolved spec as a JSON file (or JSON text)")
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        spec = read_spec(args.spec or os.environ.get("FTLAUNCH_SPEC", ""))
        paths = contract.paths(os.environ)
        train(spec, paths)
    except errors.UserError as exc:
        print(f"error: {exc.render()}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    return 0


def read_spec(source: str) -> spec_mod.Spec:
    if not source:
        raise errors.UserError("the trainer got no spec.", hint="pass --spec FILE or set FTLAUNCH_SPEC")
    text = source if source.lstrip().startswith("{") else Path(source).read_text()
    return spec_mod.validate(json.loads(text), source="resolved spec")


def train(spec: spec_mod.Spec, paths: contract.Paths) -> dict[str, Any]:
    """Runs one job end to end and returns its summary."""
    started = time.time()
    out = Path(paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    outputs.log(f"job {os.environ.get('FTLAUNCH_JOB_NAME', spec.name)}: {spec.task.value} with "
                f"{spec.technique.value} on {spec.model}")

    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.set_seed(spec.hyperparameters.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = choose_precision(spec.hyperparameters.precision, device, torch)
    if spec.task is not Task.SFT:
        raise errors.UserError(f"task '{spec.task.value}' is not implemented by this trainer yet.",
                               hint="use task: sft")
    summary = sft(spec, paths, out, device, precision)
    summary["wall_time_s"] = round(time.time() - started, 2)
    outputs.write_summary(out, summary)
    outputs.finish(out)
    outputs.log(f"outputs complete in {out}")
    return summary


def choose_precision(requested: str, device: str, torch: Any) -> str:
    if requested != "auto":
        return requested
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def common_args(spec: spec_mod.Spec, paths: contract.Paths, device: str, precision: str,
                has_eval: bool) -> dict[str, Any]:
    """TrainingArguments shared by every task, from the spec's hyperparameters."""
    hp = spec.hyperparameters
    checkpointing = hp.gradient_checkpointing
    if checkpointing is None:
        checkpointing = device == "cuda" and spec.technique is not Technique.PREFIX
    return dict(
        output_dir=paths.checkpoint_dir,
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
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        gradient_checkpointing=checkpointing,
        logging_steps=hp.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if (has_eval and hp.eval_steps) else "no",
        eval_steps=hp.eval_steps,
        save_strategy="steps" if hp.save_steps else "no",
        save_steps=hp.save_steps or 500,
        report_to=list(spec.tracking.report_to) or "none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def sft(spec: spec_mod.Spec, paths: contract.Paths, out: Path, device: str, precision: str) -> dict[str, Any]:
    import torch
    from trl import SFTConfig, SFTTrainer

    settings = spec.task_settings
    ref = models.resolve(spec.model)
    tokenizer = loading.load_tokenizer(ref, settings.chat_template)
    chat = bool(getattr(tokenizer, "chat_template", None))

    raw = _load_dataset(spec, paths)
    fmt = data.detect_format(raw.column_names, spec.dataset.format)
    rows = data.to_prompt_completion(raw, fmt, chat)
    eval_rows = None
    if spec.dataset.eval_path:
        eval_raw = data.rename_columns(data.load_split(spec.dataset.eval_path, data_dir=paths.data_dir),
                                       spec.dataset.columns)
        eval_rows = data.to_prompt_completion(eval_raw, fmt, chat)
    train_rows, eval_rows = data.train_eval(rows, spec.dataset.eval_split, spec.hyperparameters.seed, eval_rows)
    outputs.log(f"data: {len(train_rows)} training rows, {len(eval_rows) if eval_rows is not None else 0} "
                f"evaluation rows ({fmt}{', chat template' if chat else ''})")

    dtype = torch.float32 if precision == "fp32" or spec.technique is Technique.FULL else \
        (torch.bfloat16 if precision == "bf16" else torch.float16)
    t0 = time.time()
    model = loading.load_model(ref, spec.task, spec.technique, dtype)
    outputs.log(f"model loaded in {time.time() - t0:.1f} s")
    prompts = sample_prompts(settings.sample_prompts, eval_rows if eval_rows is not None else train_rows, chat)
    before = generate(model, tokenizer, prompts, chat)
    for prompt, answer in zip(prompts, before):
        outputs.log(f"before training: {_show_prompt(prompt)} -> {answer!r}")

    model = peft_setup.apply(model, spec.technique, spec.technique_settings, spec.task)
    trainable, total = peft_setup.count_parameters(model)
    outputs.log(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)")

    config = SFTConfig(
        **common_args(spec, paths, device, precision, eval_rows is not None),
        max_length=spec.hyperparameters.max_length,
        packing=settings.packing,
        completion_only_loss=True,
        dataset_num_proc=None,
    )
    callback = outputs.make_metrics_callback(out / "metrics.jsonl")
    trainer = SFTTrainer(model=model, args=config, train_dataset=train_rows, eval_dataset=eval_rows,
                         processing_class=tokenizer, callbacks=[callback])
    _drop_printer(trainer)
    if len(trainer.train_dataset) == 0:
        raise errors.UserError(
            f"no training rows are left after tokenizing: every response starts after "
            f"hyperparameters.max_length={spec.hyperparameters.max_length} tokens, so nothing is learnt.",
            hint="raise hyperparameters.max_length, or shorten the prompts")
    result = trainer.train()
    metrics: dict[str, Any] = {"train_loss": result.training_loss,
                               "final_train_loss": callback.losses[-1] if callback.losses else None}
    if eval_rows is not None:
        ev = trainer.evaluate()
        metrics["eval_loss"] = ev["eval_loss"]
        metrics["perplexity"] = math.exp(min(ev["eval_loss"], 50))
        outputs.log(f"eval_loss {ev['eval_loss']:.4f}  perplexity {metrics['perplexity']:.2f}")

    after = generate(trainer.model, tokenizer, prompts, chat)
    for prompt, answer in zip(prompts, after):
        outputs.log(f"after training:  {_show_prompt(prompt)} -> {answer!r}")
    outputs.save_weights(trainer.model, tokenizer, out, merge=spec.output.merge)
    return {
        "task": spec.task.value,
        "technique": spec.technique.value,
        "model": spec.model,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100 * trainable / total,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "steps": result.global_step,
        "tokens_seen": int(callback.tokens_seen),
        "peak_memory_bytes": outputs.peak_memory_bytes(),
        "device": device,
        "precision": precision,
        **metrics,
        "samples": [{"prompt": _show_prompt(p), "before": b, "after": a} for p, b, a in zip(prompts, before, after)],
    }


def _drop_printer(trainer: Any) -> None:
    """transformers prints every log dict when progress bars are off; metrics.jsonl and our line say it."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def _load_dataset(spec: spec_mod.Spec, paths: contract.Paths) -> Any:
    ds = data.load_split(spec.dataset.path, spec.dataset.split, data_dir=paths.data_dir)
    ds = data.rename_columns(ds, spec.dataset.columns)
    if spec.dataset.max_samples:
        ds = ds.select(range(min(spec.dataset.max_samples, len(ds))))
    if len(ds) == 0:
        raise errors.UserError(f"dataset {spec.dataset.path} has no rows.")
    return ds


def sample_prompts(given: list[str], rows: Any, chat: bool, n: int = 1) -> list[Any]:
    """The prompts answered before and after training: the spec's, else the first evaluation rows'."""
    if given:
        return [[{"role": "user", "content": p}] if chat else p for p in given]
    return [rows[i]["prompt"] for i in range(min(n, len(rows)))]


def generate(model: Any, tokenizer: Any, prompts: list[Any], chat: bool, max_new_tokens: int = 48) -> list[str]:
    """Greedy answers to the prompts, for a before/after look at what training changed."""
    import torch

    answers = []
    model.eval()
    device = next(model.parameters()).device
    for prompt in prompts:
        if chat and isinstance(prompt, list):
            enc = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)
        else:
            enc = tokenizer(prompt, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        answers.append(tokenizer.decode(ids[0][enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    model.train()
    return answers


def _show_prompt(prompt: Any) -> str:
    if isinstance(prompt, list):
        return " | ".join(m["content"] for m in prompt if m.get("role") == "user")
    return str(prompt)


def _quiet_libraries() -> None:
    """Keeps the job log about the job: library chatter (bitsandbytes' CPU notice, progress bars) off."""
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*Could not find a config file.*")
    for name in ("bitsandbytes", "transformers", "peft", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
