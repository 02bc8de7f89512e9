"""Task reward: a reward model (a sequence-level head with one output) trained on chosen/rejected pairs;
evaluation reports reward accuracy (chosen scored above rejected) and the mean margin."""

from __future__ import annotations

from typing import Any

from ftlaunch.containers.trainer import common, data
from ftlaunch.core import models


def run(job: common.Job) -> dict[str, Any]:
    from trl import RewardConfig, RewardTrainer

    spec = job.spec
    tokenizer = models.load_tokenizer(job.ref)
    rows = data.to_preference(common.load_rows(job))
    eval_raw = common.load_eval_rows(job)
    eval_rows = data.to_preference(eval_raw) if eval_raw is not None else None
    train_rows, eval_rows = common.split(job, rows, eval_rows)
    job.log(f"data: {len(train_rows)} preference pairs, {len(eval_rows) if eval_rows is not None else 0} "
            f"for evaluation")

    model = common.apply_technique(job, common.load_base(job, tokenizer, num_labels=1))
    has_eval = eval_rows is not None
    config = RewardConfig(**common.training_args(job, has_eval), max_length=spec.hyperparameters.max_length,
                          disable_dropout=True, dataset_num_proc=None)
    trainer = common.make_trainer(job, RewardTrainer, model=model, args=config, train_dataset=train_rows,
                                  eval_dataset=eval_rows, processing_class=tokenizer)
    result = common.fit(job, trainer)
    ev = common.evaluate(job, trainer, has_eval)
    metrics: dict[str, Any] = {}
    if ev:
        metrics.update(eval_loss=ev["eval_loss"], reward_accuracy=ev.get("eval_accuracy"),
                       reward_margin=ev.get("eval_margin"))
        job.log(f"eval_loss {ev['eval_loss']:.4f}  reward accuracy {ev.get('eval_accuracy', float('nan')):.3f}  "
                f"margin {ev.get('eval_margin', float('nan')):.3f}")
    common.save_weights(job, trainer.model, tokenizer)
    return common.summary(job, trainer.model, result, **metrics)
