"""Starter specs by use case and model size: the seed's "use case -> method" and size tables as defaults."""

from __future__ import annotations

from ftlaunch import templates

# size class -> (default model per use-case family, technique, GPU)
MODELS = {
    "small": {"causal": "HuggingFaceTB/SmolLM2-135M-Instruct", "encoder": "sentence-transformers/all-MiniLM-L6-v2"},
    "medium": {"causal": "Qwen/Qwen2.5-1.5B-Instruct", "encoder": "FacebookAI/roberta-large"},
    "large": {"causal": "meta-llama/Llama-3.1-8B-Instruct", "encoder": "Qwen/Qwen2.5-7B"},
}
TECHNIQUE = {"small": "lora", "medium": "lora", "large": "qlora"}
FULL_FOR_SMALL = {"classification"}  # small encoders train fully at little cost (the seed: "Full FT / PEFT")
GPU = {"small": "l4", "medium": "a100", "large": "a100"}


def render(use_case: str, size: str, model: str | None = None, name: str | None = None,
           filename: str = "ftlaunch.yaml", cloud: str = "local") -> str:
    """The starter spec's YAML text."""
    family = "encoder" if use_case == "classification" else "causal"
    technique = "full" if size == "small" and use_case in FULL_FOR_SMALL else TECHNIQUE[size]
    return templates.render(
        f"specs/{use_case}.yaml.j2",
        name=name or f"{use_case}-{size}",
        model=model or MODELS[size][family],
        technique=technique,
        size=size,
        gpu=GPU[size],
        cloud=cloud,
        filename=filename,
    )
