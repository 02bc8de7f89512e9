"""Task sft: instruction and chat fine-tuning (alpaca, messages, prompt/completion data), loss on the
response (assistant) tokens only, packed or padding-free batches when asked, a few generations before
and after training saved in summary.json."""

from __future__ import annotations

import math
from typing import Any

from ftlaunch.core import errors, models, techniques
from ftlaunch.containers.trainer import common, data


def run(job: common.Job) -> dict[str, Any]:
    from trl import SFTConfig, SFTTrainer

    spec = job.spec
    settings = spec.task_settings
    tokenizer = models.load_tokenizer(job.ref, techniques.chat_template(settings.chat_template))
    chat = bool(getattr(tokenizer, "chat_template", None))

    raw = common.load_rows(job)
    fmt = data.detect_format(raw.column_names, spec.dataset.format, spec.task)
    rows = data.to_prompt_completion(raw, fmt, chat)
    eval_raw = common.load_eval_rows(job)
    eval_rows = data.to_prompt_completion(eval_raw, fmt, chat) if eval_raw is not None else None
    train_rows, eval_rows = common.split(job, rows, eval_rows)
    job.log(f"data: {len(train_rows)} training rows, {len(eval_rows) if eval_rows is not None else 0} "
            f"evaluation rows ({fmt}{', chat template' if chat else ''})")

    model = common.load_base(job, tokenizer)
    prompts = sample_prompts(settings.sample_prompts, eval_rows if eval_rows is not None else train_rows, chat)
    before = generate(model, tokenizer, prompts, chat) if job.is_main else []
    for prompt, answer in zip(prompts, before):
        job.log(f"before training: {show_prompt(prompt)} -> {answer!r}")
    model = common.apply_technique(job, model)

    has_eval = eval_rows is not None
    # trl counts the tokens itself (num_tokens); no second count per step
    config = SFTConfig(**common.training_args(job, has_eval, include_num_input_tokens_seen="no"),
                       max_length=spec.hyperparameters.max_length,
                       packing=settings.packing,
                       packing_strategy=common.packing_strategy(job),
                       completion_only_loss=True,
                       dataset_num_proc=None)
    trainer = common.make_trainer(job, SFTTrainer, model=model, args=config, train_dataset=train_rows,
                                  eval_dataset=eval_rows, processing_class=tokenizer)
    if len(trainer.train_dataset) == 0:
        raise errors.UserError(
            f"no training rows are left after tokenizing: every response starts after "
            f"hyperparameters.max_length={spec.hyperparameters.max_length} tokens, so nothing is learnt.",
            hint="raise hyperparameters.max_length, or shorten the prompts")
    result = common.fit(job, trainer)
    metrics: dict[str, Any] = {}
    ev = common.evaluate(job, trainer, has_eval)
    if ev:
        metrics["eval_loss"] = ev["eval_loss"]
        metrics["perplexity"] = math.exp(min(ev["eval_loss"], 50))
        job.log(f"eval_loss {ev['eval_loss']:.4f}  perplexity {metrics['perplexity']:.2f}")
    after = generate(trainer.model, tokenizer, prompts, chat) if job.is_main else []
    for prompt, answer in zip(prompts, after):
        job.log(f"after training:  {show_prompt(prompt)} -> {answer!r}")
    common.save_weights(job, trainer.model, tokenizer)
    return {**common.summary(job, trainer.model, result, **metrics),
            "samples": [{"prompt": show_prompt(p), "before": b, "after": a}
                        for p, b, a in zip(prompts, before, after)]}


def sample_prompts(given: list[str], rows: Any, chat: bool, n: int = 1) -> list[Any]:
    """The prompts answered before and after training: the spec's, else the first evaluation rows'."""
    if given:
        return [[{"role": "user", "content": p}] if chat else p for p in given]
    return [rows[i]["prompt"] for i in range(min(n, len(rows)))]


def generate(model: Any, tokenizer: Any, prompts: list[Any], chat: bool, max_new_tokens: int = 48) -> list[str]:
    """Greedy answers to the prompts, for a before/after look at what training changed."""
    import torch

    answers = []
    was_training = model.training
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
    model.train(was_training)
    return answers


def show_prompt(prompt: Any) -> str:
    if isinstance(prompt, list):
        return " | ".join(m["content"] for m in prompt if m.get("role") == "user")
    return str(prompt)
