"""Task rl: policy optimisation (GRPO or RLOO) of a causal LM against a reward model trained with
task: reward, or a reward function named in the spec ('module:function' or 'file.py:function').
The summary reports the mean reward at the start and the end of training."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Callable

from ftlaunch.core import errors, models
from ftlaunch.containers.trainer import adapters, common, data


def run(job: common.Job) -> dict[str, Any]:
    import trl

    spec = job.spec
    settings = spec.task_settings
    hp = spec.hyperparameters
    if hp.batch_size * hp.grad_accum % settings.num_generations:
        raise errors.UserError(
            f"task rl: batch_size x grad_accum ({hp.batch_size * hp.grad_accum}) must be a multiple of "
            f"task_args.num_generations ({settings.num_generations}).",
            hint=f"set hyperparameters.batch_size to {settings.num_generations * max(1, hp.batch_size // settings.num_generations)}")
    tokenizer = models.load_tokenizer(job.ref)
    chat = bool(getattr(tokenizer, "chat_template", None))
    raw = common.load_rows(job)
    fmt = "prompt" if "prompt" in raw.column_names else \
        data.detect_format(raw.column_names, spec.dataset.format, spec.task)
    rows = data.to_prompts(raw, fmt, chat)
    eval_raw = common.load_eval_rows(job)
    eval_rows = data.to_prompts(eval_raw, fmt, chat) if eval_raw is not None else None
    train_rows, eval_rows = common.split(job, rows, eval_rows)
    reward, reward_tokenizer, source = reward_source(settings, spec.resolve_path)
    job.log(f"data: {len(train_rows)} prompts; reward from {source}; {settings.algorithm.upper()}, "
            f"{settings.num_generations} completions per prompt")

    model = common.apply_technique(job, common.load_base(job, tokenizer))
    has_eval = eval_rows is not None
    config_cls, trainer_cls = (trl.GRPOConfig, trl.GRPOTrainer) if settings.algorithm == "grpo" else \
        (trl.RLOOConfig, trl.RLOOTrainer)
    config = config_cls(**common.training_args(job, has_eval, include_num_input_tokens_seen="no"),
                        num_generations=settings.num_generations,
                        max_completion_length=settings.max_completion_length,
                        beta=settings.beta, temperature=settings.temperature,
                        num_generations_eval=settings.num_generations)
    trainer = common.make_trainer(job, trainer_cls, model=model, reward_funcs=reward, args=config,
                                  train_dataset=train_rows, eval_dataset=eval_rows, processing_class=tokenizer,
                                  reward_processing_classes=reward_tokenizer)
    result = common.fit(job, trainer)
    rewards = [row["reward"] for row in trainer.state.log_history if "reward" in row]
    metrics: dict[str, Any] = {"reward_source": source,
                               "initial_mean_reward": rewards[0] if rewards else None,
                               "mean_reward": sum(rewards[-3:]) / len(rewards[-3:]) if rewards else None}
    ev = common.evaluate(job, trainer, has_eval)
    if ev:
        metrics["eval_mean_reward"] = ev.get("eval_reward")
    if rewards:
        job.log(f"mean reward {metrics['initial_mean_reward']:.4f} -> {metrics['mean_reward']:.4f}")
    common.save_weights(job, trainer.model, tokenizer)
    return common.summary(job, trainer.model, result, **metrics)


def reward_source(settings: Any, resolve: Callable[[str], str]) -> tuple[Any, Any, str]:
    """(reward function or model, its tokenizer or None, a description) from task_args."""
    if settings.reward_function:
        return load_function(resolve(settings.reward_function) if ".py:" in settings.reward_function
                             else settings.reward_function), None, settings.reward_function
    if settings.reward_model:
        model, tokenizer = load_reward_model(resolve(settings.reward_model))
        return model, tokenizer, settings.reward_model
    raise errors.UserError("task rl needs a reward: task_args.reward_model or task_args.reward_function.",
                           hint="train one with task: reward and set reward_model to its output folder, "
                                "or name a function as 'module:function'")


def load_function(ref: str) -> Callable[..., list[float]]:
    """'package.module:function' or 'path/to/file.py:function' -> the function."""
    target, sep, name = ref.rpartition(":")
    if not sep or not target or not name:
        raise errors.UserError(f"task_args.reward_function '{ref}' is not 'module:function'.")
    try:
        if target.endswith(".py"):
            loader_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        fn = getattr(module, name)
    except (ImportError, FileNotFoundError, AttributeError) as exc:
        raise errors.UserError(f"task_args.reward_function '{ref}' cannot be loaded: {exc}.",
                               hint="ship the module with the job's code, or give a .py path next to the spec") from None
    fn.__name__ = getattr(fn, "__name__", name)
    return fn


def load_reward_model(path: str) -> tuple[Any, Any]:
    """A reward model written by task: reward (its output folder or weights/): full weights, a peft
    adapter (merged into its base where possible), or bottleneck adapters."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(path)
    if (folder / "weights").is_dir():
        folder = folder / "weights"
    if not folder.is_dir():
        raise errors.UserError(f"task_args.reward_model {path} is not a folder.",
                               hint="point it at the output folder of a task: reward job")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if (folder / "adapter_config.json").is_file():
        import peft

        config = peft.PeftConfig.from_pretrained(folder)
        base = AutoModelForSequenceClassification.from_pretrained(config.base_model_name_or_path, num_labels=1)
        base.config.pad_token_id = tokenizer.pad_token_id
        model = peft.PeftModel.from_pretrained(base, folder)
        if not config.is_prompt_learning:
            model = model.merge_and_unload()
    elif adapters.is_adapter_folder(folder):
        import json

        base_path = json.loads((folder / adapters.CONFIG_NAME).read_text())["base_model"]
        model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1)
        model = adapters.load(model, folder)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer
