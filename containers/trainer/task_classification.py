"""Task classification: sequence classification with a label column and a label mapping; evaluation
reports loss, accuracy and macro-F1."""

from __future__ import annotations

from typing import Any

from ftlaunch.containers.trainer import common, data
from ftlaunch.core import models


def run(job: common.Job) -> dict[str, Any]:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    spec = job.spec
    settings = spec.task_settings
    tokenizer = models.load_tokenizer(job.ref)
    rows, names = data.to_classification(common.load_rows(job), settings.labels)
    eval_raw = common.load_eval_rows(job)
    eval_rows = data.to_classification(eval_raw, names)[0] if eval_raw is not None else None
    train_rows, eval_rows = common.split(job, rows, eval_rows)
    job.log(f"data: {len(train_rows)} training rows, {len(eval_rows) if eval_rows is not None else 0} "
            f"evaluation rows, {len(names)} labels ({', '.join(names[:8])})")

    max_length = spec.hyperparameters.max_length

    def tokenize(batch: dict) -> dict:
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    train_tok = train_rows.map(tokenize, batched=True, remove_columns=["text"])
    eval_tok = eval_rows.map(tokenize, batched=True, remove_columns=["text"]) if eval_rows is not None else None

    model = common.apply_technique(job, common.load_base(job, tokenizer, num_labels=len(names), label_names=names))
    has_eval = eval_tok is not None
    args = TrainingArguments(**common.training_args(job, has_eval))
    trainer = common.make_trainer(job, Trainer, model=model, args=args, train_dataset=train_tok,
                                  eval_dataset=eval_tok, processing_class=tokenizer,
                                  data_collator=DataCollatorWithPadding(tokenizer),
                                  compute_metrics=lambda p: scores(p.predictions, p.label_ids, len(names)))
    result = common.fit(job, trainer)
    ev = common.evaluate(job, trainer, has_eval)
    metrics: dict[str, Any] = {"labels": names}
    if ev:
        metrics.update(eval_loss=ev["eval_loss"], accuracy=ev["eval_accuracy"], macro_f1=ev["eval_macro_f1"])
        job.log(f"eval_loss {ev['eval_loss']:.4f}  accuracy {ev['eval_accuracy']:.3f}  "
                f"macro-F1 {ev['eval_macro_f1']:.3f}")
    common.save_weights(job, trainer.model, tokenizer)
    return common.summary(job, trainer.model, result, **metrics)


def scores(logits: Any, labels: Any, n_labels: int) -> dict[str, float]:
    """Accuracy and macro-F1 (the mean of per-label F1, labels absent from both sides skipped)."""
    import numpy as np

    if isinstance(logits, tuple):
        logits = logits[0]
    predicted = np.asarray(logits).argmax(-1)
    labels = np.asarray(labels)
    f1s = []
    for label in range(n_labels):
        tp = int(((predicted == label) & (labels == label)).sum())
        fp = int(((predicted == label) & (labels != label)).sum())
        fn = int(((predicted != label) & (labels == label)).sum())
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float((predicted == labels).mean()), "macro_f1": float(np.mean(f1s)) if f1s else 0.0}
