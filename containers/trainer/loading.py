"""Loads the tokenizer and the base model a spec names (hub id, local folder, or GGUF file), for its task."""

from __future__ import annotations

import logging
from typing import Any

from ftlaunch.core import models
from ftlaunch.core.techniques import Task, Technique

log = logging.getLogger("ftlaunch.trainer")

CAUSAL_TASKS = (Task.SFT, Task.CPT, Task.DPO, Task.RL)


def load_model(ref: models.ModelRef, task: Task, technique: Technique, dtype: Any,
               num_labels: int | None = None, label_names: list[str] | None = None,
               quantization: Any = None) -> Any:
    """The base model for the task, in `dtype`; GGUF weights are dequantised and made saveable."""
    import transformers

    kwargs: dict[str, Any] = {"dtype": dtype}
    location = ref.location
    if ref.gguf_file and quantization is not None:
        # transformers cannot quantise while reading GGUF: read it once, keep a plain copy, quantise that
        location = dequantized_copy(ref)
    elif ref.gguf_file:
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
    model = cls.from_pretrained(location, **kwargs)
    if quantization is not None:
        keep_4bit_layout(model)
    if ref.gguf_file and quantization is None:
        # GGUF weights arrive dequantised to `dtype`: drop the quantiser so the model trains and
        # save_pretrained writes plain safetensors
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        if getattr(model.config, "_is_quantized", False):
            model.config._is_quantized = False
    return model


def keep_4bit_layout(model: Any) -> None:
    """Turns off bitsandbytes' CPU inference repacking of 4-bit weights. On a CPU with AVX512-BF16, the first
    forward pass in eval mode without gradients (the "before training" sample) repacks each Linear4bit's
    weight in place into a layout that its training path then reads as the plain one: the frozen base
    silently changed, the QLoRA loss rose after a few steps, and a reloaded adapter did not reproduce
    the trained model."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def dequantized_copy(ref: models.ModelRef) -> str:
    """A safetensors copy of a GGUF model's dequantised weights (float32), made once and cached beside
    FTLAUNCH_HOME (or ~/.cache/ftlaunch); returns its folder."""
    import hashlib
    import os
    from pathlib import Path

    import torch
    import transformers

    source = Path(ref.location) / ref.gguf_file if not Path(ref.gguf_file).is_absolute() else Path(ref.gguf_file)
    stat = source.stat() if source.exists() else None
    key = hashlib.sha256(f"{source}:{stat.st_size if stat else 0}:{stat.st_mtime if stat else 0}".encode()).hexdigest()[:16]
    root = Path(os.environ.get("FTLAUNCH_CACHE", Path.home() / ".cache" / "ftlaunch")) / "gguf" / key
    if (root / "config.json").exists():
        return str(root)
    model = transformers.AutoModelForCausalLM.from_pretrained(ref.location, gguf_file=ref.gguf_file,
                                                              dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._is_quantized = False
    tmp = root.with_name(root.name + f".{os.getpid()}.tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tmp.replace(root)
    log.info("dequantised %s to %s", source, root)
    return str(root)


def load_trained(spec: Any, weights: str, dtype: Any = None) -> Any:
    """The model a job trained, rebuilt from its weights/ folder: the base model plus the saved adapter
    (peft or bottleneck), or the full fine-tuned model. For checking outputs and for inference."""
    import json
    from pathlib import Path

    import torch

    from ftlaunch.containers.trainer import adapters

    folder = Path(weights)
    dtype = dtype or torch.float32
    labels = None
    if spec.task not in CAUSAL_TASKS:
        config_file = folder / "config.json"
        if config_file.exists():
            labels = json.loads(config_file.read_text()).get("id2label")
    if (folder / "adapter_config.json").is_file() or adapters.is_adapter_folder(folder):
        quantization = None
        if spec.technique is Technique.QLORA:
            quantization = bnb_config(spec.technique_settings, dtype)
        num_labels = _saved_num_labels(folder, spec)
        base = load_model(models.resolve(spec.model), spec.task, spec.technique, dtype, num_labels=num_labels,
                          quantization=quantization)
        if getattr(base.config, "pad_token_id", None) is None:
            base.config.pad_token_id = models.load_tokenizer(models.resolve(spec.model)).pad_token_id
        if adapters.is_adapter_folder(folder):
            return adapters.load(base, folder)
        import peft

        if spec.technique is Technique.QLORA:  # the same preparation as in training (norms in float32)
            base = peft.prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
        return peft.PeftModel.from_pretrained(base, str(folder))
    import transformers

    cls = transformers.AutoModelForCausalLM if spec.task in CAUSAL_TASKS else \
        transformers.AutoModelForSequenceClassification
    return cls.from_pretrained(folder, dtype=dtype, num_labels=len(labels) if labels else None) if labels \
        else cls.from_pretrained(folder, dtype=dtype)


def _saved_num_labels(folder: Any, spec: Any) -> int | None:
    """Number of outputs of a sequence-level head, from the saved head's weights."""
    if spec.task in CAUSAL_TASKS:
        return None
    from safetensors import safe_open

    for name in ("adapter_model.safetensors",):
        path = folder / name
        if path.exists():
            with safe_open(str(path), "pt") as f:
                for key in f.keys():
                    if any(h in key for h in ("score", "classifier")) and key.endswith("weight"):
                        return f.get_slice(key).get_shape()[0]
    return 1


def bnb_config(settings: Any, compute: Any, sharded: bool = False) -> Any:
    """bitsandbytes 4-bit settings for QLoRA (NF4 by default). Sharded by FSDP, the packed 4-bit weights are
    stored in the compute dtype (bnb_4bit_quant_storage), so that FSDP can flatten them with the model's other
    parameters into uniform shards (the FSDP-QLoRA recipe); otherwise they stay uint8."""
    from transformers import BitsAndBytesConfig

    extra = {"bnb_4bit_quant_storage": compute} if sharded else {}
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=settings.quant_type,
                              bnb_4bit_use_double_quant=settings.double_quant, bnb_4bit_compute_dtype=compute,
                              llm_int8_skip_modules=["score", "classifier", "lm_head"], **extra)
