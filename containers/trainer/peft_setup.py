"""Applies a spec's technique to a loaded model: full fine-tuning, or a peft method with defaults per family."""

from __future__ import annotations

import math

from typing import Any

from ftlaunch.core.techniques import Task, Technique

SEQ_CLS_TASKS = (Task.CLASSIFICATION, Task.REWARD)


def task_type(task: Task) -> str:
    return "SEQ_CLS" if task in SEQ_CLS_TASKS else "CAUSAL_LM"


def peft_config(technique: Technique, settings: Any, task: Task) -> Any:
    """The peft config for a technique, or None for full fine-tuning."""
    import peft

    kind = task_type(task)
    if technique is Technique.FULL:
        return None
    if technique in (Technique.LORA, Technique.DORA, Technique.QLORA):
        return peft.LoraConfig(
            task_type=kind, r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
            target_modules=settings.target_modules or "all-linear", use_rslora=settings.use_rslora,
            use_dora=technique is Technique.DORA)
    if technique is Technique.IA3:
        return peft.IA3Config(task_type=kind, target_modules=settings.target_modules,
                              feedforward_modules=settings.feedforward_modules)
    if technique is Technique.PREFIX:
        return peft.PrefixTuningConfig(task_type=kind, num_virtual_tokens=settings.num_virtual_tokens)
    if technique is Technique.PROMPT:
        if settings.init_text:
            return peft.PromptTuningConfig(task_type=kind, num_virtual_tokens=settings.num_virtual_tokens,
                                           prompt_tuning_init="TEXT", prompt_tuning_init_text=settings.init_text)
        return peft.PromptTuningConfig(task_type=kind, num_virtual_tokens=settings.num_virtual_tokens)
    if technique is Technique.PTUNING:
        return peft.PromptEncoderConfig(task_type=kind, num_virtual_tokens=settings.num_virtual_tokens,
                                        encoder_hidden_size=settings.encoder_hidden_size,
                                        encoder_reparameterization_type=settings.encoder_reparameterization_type)
    raise NotImplementedError(f"technique {technique.value} is not implemented in this trainer yet")


def apply(model: Any, technique: Technique, settings: Any, task: Task) -> Any:
    """Wraps the model for the technique; for full fine-tuning returns it unchanged."""
    config = peft_config(technique, settings, task)
    if config is None:
        return model
    import peft

    if technique is Technique.QLORA:
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return peft.get_peft_model(model, config)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters, counting each shared tensor once and leaving out a reference copy."""
    seen: set[int] = set()
    trainable = total = 0
    for name, param in model.named_parameters():
        if id(param) in seen or ".ref." in name:  # trl's frozen copy of the adapter, DPO's reference
            continue
        seen.add(id(param))
        # a 4-bit weight packs two values a byte: count its unquantised elements, so QLoRA's total (and
        # trainable %) matches LoRA's for the same model and adapter
        quant_state = getattr(param, "quant_state", None)
        n = math.prod(quant_state.shape) if quant_state is not None else param.numel()
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total
