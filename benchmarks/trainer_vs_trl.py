"""Steps per second of the ftlaunch trainer against a minimal hand-written TRL script: same model, data,
technique (LoRA) and hyperparameters. The trainer must be at least as fast (ratio >= 1.0).

Run: python benchmarks/trainer_vs_trl.py [--steps 40] [--rounds 2]
Both run in this process, alternating, after one warm-up each; each side's best round is compared, timed
by the Trainer's own train_runtime (model loading and data preparation excluded on both sides).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tiny  # noqa: E402

TARGET = 1.0


def ours(model: Path, data: Path, work: Path, steps: int) -> float:
    from ftlaunch.core import spec
    from ftlaunch.containers.trainer import contract, run

    s = spec.loads(f"""\
name: bench
model: {model}
technique: lora
technique_args: {{r: 16, alpha: 32, dropout: 0.05}}
task: sft
dataset: {{path: {data}, eval_split: 0.0}}
hyperparameters: {{max_steps: {steps}, batch_size: 8, learning_rate: 0.0002, max_length: 256}}
""")
    summary = run.train(s, contract.Paths(str(work / "out"), str(work / "ckpt"), None, "local"))
    return steps / summary["train_runtime_s"]


def minimal_trl(model_dir: Path, data: Path, work: Path, steps: int) -> float:
    """What a person writes by hand with TRL for the same job."""
    import datasets
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ds = datasets.load_dataset("json", data_files=str(data), split="train")
    ds = ds.map(lambda r: {"prompt": [{"role": "user", "content": f"{r['instruction']}\n\n{r['input']}"}],
                           "completion": [{"role": "assistant", "content": r["output"]}]},
                remove_columns=ds.column_names)
    config = SFTConfig(output_dir=str(work / "trl"), max_steps=steps, per_device_train_batch_size=8,
                       learning_rate=2e-4, max_length=256, use_cpu=True, bf16=False, gradient_checkpointing=False,
                       report_to="none", logging_steps=1, save_strategy="no", disable_tqdm=True,
                       warmup_steps=0.03, lr_scheduler_type="cosine")
    lora = peft.LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")
    trainer = SFTTrainer(model=model, args=config, train_dataset=ds, processing_class=tokenizer, peft_config=lora)
    result = trainer.train()
    return steps / result.metrics["train_runtime"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from ftlaunch.containers.trainer import run

    run._quiet_libraries()
    root = Path(tempfile.mkdtemp(prefix="ftl-bench-"))
    model = tiny.build_causal_lm(root / "model", hidden=256, layers=4)
    data = tiny.write_alpaca(root / "train.jsonl", n=512)
    ours(model, data, root / "warm-ours", 3)
    minimal_trl(model, data, root / "warm-trl", 3)
    best_ours = best_trl = 0.0
    for i in range(args.rounds):
        best_trl = max(best_trl, minimal_trl(model, data, root / f"trl-{i}", args.steps))
        best_ours = max(best_ours, ours(model, data, root / f"ours-{i}", args.steps))
    ratio = best_ours / best_trl
    print(f"model: tiny Llama hidden 256, 4 layers; LoRA r=16 all-linear; batch 8; {args.steps} steps; best of "
          f"{args.rounds} rounds")
    print(f"minimal TRL script: {best_trl:.2f} steps/s")
    print(f"ftlaunch trainer:   {best_ours:.2f} steps/s")
    print(f"ratio trainer / TRL: {ratio:.2f}x (target >= {TARGET:.1f}x) {'PASS' if ratio >= TARGET else 'FAIL'}")


if __name__ == "__main__":
    main()
