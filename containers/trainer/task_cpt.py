"""Task cpt: continued pretraining on raw domain text (txt lines, or a text column), packed into full
sequences, loss on every token; evaluation reports loss and perplexity."""

from __future__ import annotations

import math
from typing import Any

from ftlaunch.containers.trainer import common, data
from ftlaunch.core import models


def run(job: common.Job) -> dict[str, Any]:
    from trl import SFTConfig, SFTTrainer

    spec = job.spec
    settings = spec.task_settings
    tokenizer = models.load_tokenizer(job.ref)
    raw = common.load_rows(job)
    fmt = data.detect_format(raw.column_names, spec.dataset.format, spec.task)
    rows = data.to_text(raw, fmt)
    eval_raw = common.load_eval_rows(job)
    eval_rows = data.to_text(eval_raw, fmt) if eval_raw is not None else None
    train_rows, eval_rows = common.split(job, rows, eval_rows)
    job.log(f"data: {len(train_rows)} training texts, {len(eval_rows) if eval_rows is not None else 0} "
            f"evaluation texts{', packed' if settings.packing else ''}")

    model = common.apply_technique(job, common.load_base(job, tokenizer))
    has_eval = eval_rows is not None
    # trl counts the tokens itself (num_tokens); no second count per step
    config = SFTConfig(**common.training_args(job, has_eval, include_num_input_tokens_seen="no"),
                       max_length=spec.hyperparameters.max_length,
                       packing=settings.packing,
                       packing_strategy="wrapped" if settings.packing else "bfd",
                       dataset_text_field="text",
                       completion_only_loss=False,
                       dataset_num_proc=None)
    trainer = common.make_trainer(job, SFTTrainer, model=model, args=config, train_dataset=train_rows,
                                  eval_dataset=eval_rows, processing_class=tokenizer)
    result = common.fit(job, trainer)
    metrics: dict[str, Any] = {}
    ev = common.evaluate(job, trainer, has_eval)
    if ev:
        metrics["eval_loss"] = ev["eval_loss"]
        metrics["perplexity"] = math.exp(min(ev["eval_loss"], 50))
        job.log(f"eval_loss {ev['eval_loss']:.4f}  perplexity {metrics['perplexity']:.2f}")
    common.save_weights(job, trainer.model, tokenizer)
    return common.summary(job, trainer.model, result, **metrics)
