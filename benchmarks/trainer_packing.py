"""Non-padding tokens per second of SFT with packing (rows packed into max_length chunks on CPU) against padded
batches, on a mixed-length dataset (most answers short, some long). Target: >= 1.5x.

Run: python benchmarks/trainer_packing.py [--steps 20]
Same model, technique (LoRA), batch size and max_length; tokens counted are the non-padding tokens each
run trained on (trl's num_tokens), divided by the Trainer's train_runtime.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tiny  # noqa: E402

TARGET = 1.5
WORDS = "the city of Paris lies in France and Tokyo is in Japan while Berlin is German".split()


def write_mixed(path: Path, n: int = 400, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.randint(3, 12) if rng.random() < 0.85 else rng.randint(150, 300)
        rows.append({"instruction": "Write about cities.", "input": "",
                     "output": " ".join(rng.choice(WORDS) for _ in range(words))})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tokens_per_s(model: Path, data: Path, work: Path, steps: int, packing: bool) -> tuple[float, dict]:
    from ftlaunch.core import spec
    from ftlaunch.containers.trainer import contract, run

    s = spec.loads(f"""\
name: pack
model: {model}
technique: lora
task: sft
task_args: {{packing: {str(packing).lower()}}}
dataset: {{path: {data}, eval_split: 0.0}}
hyperparameters: {{max_steps: {steps}, batch_size: 8, learning_rate: 0.0002, max_length: 512}}
""")
    summary = run.train(s, contract.Paths(str(work / "out"), str(work / "ckpt"), None, "local"))
    return summary["tokens_seen"] / summary["train_runtime_s"], summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    from ftlaunch.containers.trainer import run

    run._quiet_libraries()
    root = Path(tempfile.mkdtemp(prefix="ftl-pack-"))
    model = tiny.build_causal_lm(root / "model", hidden=128, layers=2)
    data = write_mixed(root / "mixed.jsonl")
    tokens_per_s(model, data, root / "warm", 2, False)
    padded, _ = tokens_per_s(model, data, root / "padded", args.steps, False)
    packed, _ = tokens_per_s(model, data, root / "packed", args.steps, True)
    ratio = packed / padded
    print(f"model: tiny Llama hidden 128, 2 layers; LoRA; batch 8; max_length 512; {args.steps} steps; "
          f"85% of answers 3-12 words, 15% 150-300 words")
    print(f"padded batches:   {padded:,.0f} non-padding tokens/s")
    print(f"packed (wrapped): {packed:,.0f} non-padding tokens/s")
    print(f"ratio packed / padded: {ratio:.2f}x (target >= {TARGET:.1f}x) {'PASS' if ratio >= TARGET else 'FAIL'}")


if __name__ == "__main__":
    main()
