"""Loads the tokenizer and the base model a spec names (hub id, local folder, or GGUF file), for its task."""

from __future__ import annotations

import logging
from typing import Any

from ftlaunch import models
from ftlaunch.techniques import Task, Technique

log = logging.getLogger("ftlaunch.trainer")

CAUSAL_TASKS = (Task.SFT, Task.CPT, Task.DPO, Task.RL)


def load_tokenizer(ref: models.ModelRef, chat_template: str | None = None) -> Any:
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": ref.gguf_file} if ref.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(ref.location, **kwargs)
    if chat_template:
        tokenizer.chat_template = chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(ref: models.ModelRef, task: Task, technique: Technique, dtype: Any,
               num_labels: int | None = None, label_names: list[str] | None = None,
               quantization: Any = None) -> Any:
    """The base model for the task, in `dtype`; GGUF weights are dequantised and made saveable."""
    import transformers

    kwargs: dict[str, Any] = {"dtype": dtype}
    if ref.gguf_file:
        kwargs["gguf_file"] = ref.gguf_file
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if task in CAUSAL_TASKS:
        cls = transformers.AutoModelForCausalLM
    else:
        cls = transformers.AutoModelForSequenceClassification
        kwargs["num_labels"] = num_labels or 1
        if label_names:
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {name: i for i, name in enumerate(label_names)}
    model = cls.from_pretrained(ref.location, **kwargs)
    if ref.gguf_file:
        # GGUF weights arrive dequantised to `dtype`: drop the quantiser so the model trains and
        # save_pretrained writes plain safetensors
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        if getattr(model.config, "_is_quantized", False):
            model.config._is_quantized = False
    return model
