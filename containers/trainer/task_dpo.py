"""Task dpo: direct preference optimisation on chosen/rejected pairs against the frozen starting model;
evaluation reports reward accuracy and margins (the implicit DPO rewards)."""

from __future__ import annotations

from typing import Any

from ftlaunch.containers.trainer import common, data
from ftlaunch.core import models


def run(job: common.Job) -> dict[str, Any]:
    from trl import DPOConfig, DPOTrainer

    spec = job.spec
    settings = spec.task_settings
    tokenizer = models.load_tokenizer(job.ref)
    rows = data.to_preference(common.load_rows(job))
    eval_raw = common.load_eval_rows(job)
    eval_rows = data.to_preference(eval_raw) if eval_raw is not None else None
    train_rows, eval_rows = common.split(job, rows, eval_rows)
    job.log(f"data: {len(train_rows)} preference pairs, {len(eval_rows) if eval_rows is not None else 0} "
            f"for evaluation")

    model = common.apply_technique(job, common.load_base(job, tokenizer))
    has_eval = eval_rows is not None
    config = DPOConfig(**common.training_args(job, has_eval), beta=settings.beta, loss_type=[settings.loss_type],
                       max_length=spec.hyperparameters.max_length, dataset_num_proc=None)
    trainer = common.make_trainer(job, DPOTrainer, model=model, args=config, train_dataset=train_rows,
                                  eval_dataset=eval_rows, processing_class=tokenizer)
    result = common.fit(job, trainer)
    ev = common.evaluate(job, trainer, has_eval)
    metrics: dict[str, Any] = {}
    if ev:
        metrics.update(eval_loss=ev["eval_loss"], reward_accuracy=ev.get("eval_rewards/accuracies"),
                       reward_margin=ev.get("eval_rewards/margins"))
        job.log(f"eval_loss {ev['eval_loss']:.4f}  reward accuracy {metrics['reward_accuracy']}  "
                f"margin {metrics['reward_margin']}")
    common.save_weights(job, trainer.model, tokenizer)
    return common.summary(job, trainer.model, result, **metrics)
