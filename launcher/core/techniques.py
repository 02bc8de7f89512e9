"""Which fine-tuning technique fits which task: the one table that drives validation and `ftlaunch techniques`.

No torch here: the launcher checks a spec against this table before anything is planned or paid for.
"""

from __future__ import annotations

import enum


class Technique(str, enum.Enum):
    FULL = "full"
    LORA = "lora"
    DORA = "dora"
    QLORA = "qlora"
    IA3 = "ia3"
    PREFIX = "prefix"
    PROMPT = "prompt"
    PTUNING = "ptuning"
    ADAPTER = "adapter"


class Task(str, enum.Enum):
    SFT = "sft"
    CPT = "cpt"
    CLASSIFICATION = "classification"
    REWARD = "reward"
    DPO = "dpo"
    RL = "rl"


# One line per technique: what it trains (the seed's "Fine-Tuning Techniques").
DESCRIPTIONS: dict[Technique, str] = {
    Technique.FULL: "every weight; best quality ceiling, most memory (weights + grads + Adam states)",
    Technique.LORA: "low-rank update matrices beside frozen weights; ~0.1-2% trainable, near-full quality",
    Technique.DORA: "LoRA with a learned magnitude per column; closer to full fine-tuning, ~20% slower than LoRA",
    Technique.QLORA: "LoRA on a 4-bit NF4-quantised frozen base; the least memory for large models",
    Technique.IA3: "learned scaling vectors on keys, values and FFN; the fewest trainable parameters",
    Technique.PREFIX: "trainable key/value prefixes in every layer; frozen model, no gradient checkpointing",
    Technique.PROMPT: "trainable virtual-token embeddings before the input; tiny, best on large models",
    Technique.PTUNING: "virtual tokens produced by a small prompt encoder (MLP); steadier than prompt tuning",
    Technique.ADAPTER: "bottleneck adapters (down, nonlinearity, up, residual) inserted after each block",
}

TASK_DESCRIPTIONS: dict[Task, str] = {
    Task.SFT: "instruction or chat supervised fine-tuning, loss on responses only",
    Task.CPT: "continued pretraining on raw domain text (unsupervised)",
    Task.CLASSIFICATION: "sequence classification with a label column",
    Task.REWARD: "reward model trained on chosen/rejected preference pairs",
    Task.DPO: "direct preference optimisation on chosen/rejected pairs",
    Task.RL: "policy optimisation (GRPO or RLOO) against a reward model or reward function (RLHF)",
}

# (technique, task) -> the reason the pair is not supported. Absent pairs are supported, and every
# supported pair is trained by tests/containers/test_trainer_grid.py. Today every pair works with the
# pinned libraries: trl trims prompt-learning's virtual-token positions in DPO and GRPO/RLOO log-probs,
# peft's disable_adapter gives DPO its reference for every peft method, sequence-classification heads
# train beside prompt-learning and bottleneck adapters, and QLoRA heads are kept in the compute dtype.
# Add a pair here, with a reason ending in what to use instead, when a library version breaks it.
UNSUPPORTED: dict[tuple[Technique, Task], str] = {}

# What each use case (the seed's table) should start with, best first.
USE_CASES: dict[str, tuple[Task, tuple[Technique, ...]]] = {
    "classification": (Task.CLASSIFICATION, (Technique.LORA, Technique.FULL, Technique.IA3)),
    "instruction": (Task.SFT, (Technique.LORA, Technique.QLORA, Technique.FULL)),
    "chat": (Task.SFT, (Technique.LORA, Technique.QLORA, Technique.FULL)),
    "domain": (Task.CPT, (Technique.LORA, Technique.FULL)),
    "preference": (Task.DPO, (Technique.LORA, Technique.QLORA)),
    "multimodal": (Task.SFT, (Technique.ADAPTER, Technique.LORA)),
}

# Learning rates that work as a start for each technique (full fine-tuning needs far smaller steps).
DEFAULT_LEARNING_RATE: dict[Technique, float] = {
    Technique.FULL: 2e-5,
    Technique.LORA: 2e-4,
    Technique.DORA: 2e-4,
    Technique.QLORA: 2e-4,
    Technique.IA3: 3e-3,
    Technique.PREFIX: 1e-2,
    Technique.PROMPT: 3e-2,
    Technique.PTUNING: 1e-2,
    Technique.ADAPTER: 1e-3,
}

# The data each task trains on. Canonical columns per format (after dataset.columns renames the file's own);
# the launcher's pre-flight and the trainer read the same table.
FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "output"),
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "preference": ("chosen", "rejected"),
    "classification": ("text", "label"),
    "text": ("text",),
}
# Formats each task takes, in the order `format: auto` tries them. "prompt" (RL only) is a bare `prompt` column.
TASK_FORMATS: dict[Task, tuple[str, ...]] = {
    Task.SFT: ("messages", "alpaca", "prompt_completion"),
    Task.CPT: ("text", "alpaca", "prompt_completion"),
    Task.CLASSIFICATION: ("classification",),
    Task.REWARD: ("preference",),
    Task.DPO: ("preference",),
    Task.RL: ("prompt", "messages", "alpaca", "prompt_completion"),
}
ALPACA_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"


def format_unsuited(fmt: str, task: Task | str) -> str | None:
    """None when dataset.format `fmt` (or auto) suits the task, else what to use instead."""
    task = Task(task)
    if fmt == "auto" or fmt in TASK_FORMATS[task]:
        return None
    usable = [f for f in TASK_FORMATS[task] if f in FORMAT_COLUMNS]
    return (f"task '{task.value}' does not train on '{fmt}' data; use format "
            f"{' or '.join(usable)} (or auto){', or a prompt column' if task is Task.RL else ''}")


PEFT_TECHNIQUES = frozenset(t for t in Technique if t is not Technique.FULL)
LORA_FAMILY = frozenset({Technique.LORA, Technique.DORA, Technique.QLORA})


def unsupported_reason(technique: Technique | str, task: Task | str) -> str | None:
    """None when the pair is supported, else why not (one sentence ending with what to use instead)."""
    return UNSUPPORTED.get((Technique(technique), Task(task)))


def supported_techniques(task: Task | str) -> list[Technique]:
    """Techniques the task supports, in declaration order."""
    return [t for t in Technique if unsupported_reason(t, task) is None]


def table() -> list[dict[str, object]]:
    """Rows for `ftlaunch techniques`: technique, description and, per task, None or the reason it is not supported."""
    return [
        {"technique": t.value, "description": DESCRIPTIONS[t],
         "tasks": {task.value: unsupported_reason(t, task) for task in Task}}
        for t in Technique
    ]


def trainable_percent(trainable: int, total: int) -> float:
    """The one definition of "trainable %": trainable parameters over all parameters of the trained model
    (frozen base plus adapter), counted unquantised, so LoRA and QLoRA with the same adapter agree."""
    return 100.0 * trainable / total if total else 0.0


# Chat templates by name (`task_args.chat_template: chatml`), for the trainer and the pre-flight's token counts.
CHAT_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
        "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
        "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "zephyr": (
        "{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}{{ '<|assistant|>\n' }}{% generation %}"
        "{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n' }}"
        "{% else %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"),
}


def chat_template(value: str | None) -> str | None:
    """A named template (chatml, zephyr) or the Jinja text itself."""
    if value is None:
        return None
    return CHAT_TEMPLATES.get(value.strip().lower(), value)
