"""Planning across targets: offers ranked by predicted cost or time, the cheapest that fits chosen, max_cost as a
runtime cap, the CLI commands, and no heavy imports on the way."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftlaunch import backends
from ftlaunch.core import errors
from ftlaunch.planning import plan
from ftlaunch.cli import plan_cli
from ftlaunch.backends.base import Capability
from ftlaunch.core import spec as spec_mod


def write_spec(tmp_path: Path, model: str = "Qwen/Qwen2.5-0.5B", technique: str = "lora", extra: str = "") -> Path:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"question {i}", "output": "answer " * 60}) + "\n"
                            for i in range(500)))
    path = tmp_path / "ftlaunch.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: plan-test
        model: {model}
        technique: {technique}
        dataset:
          path: train.jsonl
        hyperparameters:
          batch_size: 1
          max_length: 1024
        """) + extra)
    return path


def mid(pair):
    return sum(pair) / 2


def test_estimate_ranks_four_targets_and_chooses_the_cheapest_that_fits(tmp_path):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path)))
    assert {o.cloud for o in p.offers} == {"sagemaker", "vertex", "azureml", "skypilot"}
    assert p.offer is not None and p.offer.fits
    fitting = [o for o in p.offers if o.fits]
    assert mid(p.offer.cost) == min(mid(o.cost) for o in fitting)
    assert p.offer.price_date and p.offer.price_source
    assert "cheapest" in p.why and p.offer.instance in p.why
    assert p.estimate["tokens"]["how"].startswith("counted")


def test_optimize_time_chooses_the_fastest(tmp_path):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path)), optimize="time")
    fitting = [o for o in p.offers if o.fits]
    assert mid(p.offer.hours) == min(mid(o.hours) for o in fitting)
    cheapest = plan_cli.estimate_plan(str(write_spec(tmp_path)))
    assert mid(p.offer.hours) <= mid(cheapest.offer.hours)


def test_never_chooses_an_offer_that_does_not_fit(tmp_path):
    path = write_spec(tmp_path, model="meta-llama/Llama-3.1-70B", technique="full")
    p = plan_cli.estimate_plan(str(path), gpu="h100")
    assert p.offer is None and not any(o.fits for o in p.offers)
    assert "does not fit" in p.why and "What would fit" in p.why
    spec = spec_mod.load(path, ("resources.cloud=auto", "resources.gpu=h100"))
    with pytest.raises(errors.UserError, match="does not fit"):
        plan.make(spec)


def test_70b_full_finetune_says_it_does_not_fit_on_one_gpu_and_what_would(tmp_path):
    path = write_spec(tmp_path, model="meta-llama/Llama-3.1-70B", technique="full")
    result = CliRunner().invoke(plan_cli.estimate, [str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "on one GPU it needs" in result.output and "fits none of the catalog's GPUs" in result.output
    p = plan_cli.estimate_plan(str(path))
    assert p.offer.fits and p.offer.gpus == 8  # what would: the cheapest 8-GPU node it fits on
    single = [o for o in p.offers if o.gpus == 1]
    assert single and not any(o.fits for o in single)


def test_max_cost_caps_the_maximum_runtime(tmp_path):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path)), overrides=("resources.max_cost=0.5",))
    assert p.max_runtime_s == min(int(0.5 / p.offer.price_per_hour * 3600),
                                  max(3600, int(p.offer.hours[1] * plan.MAX_RUNTIME_FACTOR * 3600) + 1))
    broke = plan_cli.estimate_plan(str(write_spec(tmp_path)), overrides=("resources.max_cost=0.01",))
    assert broke.offer is None and "max_cost" in broke.why


def test_spot_offers_use_spot_prices(tmp_path):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path)), overrides=("resources.spot=true",))
    assert all(o.spot and o.price_per_hour == pytest.approx(o.spot_price_per_hour, abs=1e-4) for o in p.offers)


def test_one_cloud_and_gpu_count(tmp_path):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path)), cloud="vertex", gpu="a100:8")
    assert {(o.cloud, o.gpu) for o in p.offers} == {("vertex", "A100")}
    assert all(bool(o.excluded) == (o.gpus != 8) for o in p.offers)  # other counts shown, marked, not chosen
    assert p.offer.gpus == 8
    assert p.offer.details["accelerator_type"] == "NVIDIA_TESLA_A100"
    assert p.offer.details["machine_type"] == p.offer.instance == "a2-highgpu-8g"


def test_local_plan_still_works(tmp_path):
    spec = spec_mod.load(write_spec(tmp_path))
    p = plan.make(spec)
    assert p.cloud == "local" and p.offer.instance == "this machine" and p.offers == [p.offer]
    assert p.estimate["params"] == 494_032_768


def test_offers_table_rows(tmp_path):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path)))
    rows = plan_cli.offers_table(p)
    assert len(rows) == len(p.offers)
    assert set(rows[0]) >= {"target", "instance", "gpus", "usd_per_hour", "hours", "total_usd", "peak_gb_per_gpu",
                            "fits"}
    assert sum(r["chosen"] for r in rows) == 1


def test_cli_commands(tmp_path):
    runner = CliRunner()
    out = runner.invoke(plan_cli.estimate, [str(write_spec(tmp_path)), "--json", "--set", "hyperparameters.epochs=2"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["chosen"]["fits"] and data["estimate"]["epochs"] == 2
    out = runner.invoke(plan_cli.gpus, ["--model", "meta-llama/Llama-3.1-8B", "--json"])
    data = json.loads(out.output)
    row = {(r["technique"], r["gpu"]): r for r in data["rows"]}
    assert data["size_class"] == "large"
    assert not row[("full", "H100")]["fits_one_gpu"] and row[("qlora", "L4")]["fits_one_gpu"]
    out = runner.invoke(plan_cli.recommend, ["--model", "meta-llama/Llama-3.1-70B", "--use-case", "chat", "--json"])
    data = json.loads(out.output)
    assert data["technique"] in ("lora", "qlora") and data["choice"]["peak_gb_per_gpu"] <= data["choice"]["gpu_memory_gb"]
    out = runner.invoke(plan_cli.recommend, ["--model", "gpt2", "--use-case", "classification", "--json"])
    assert json.loads(out.output)["technique"] == "full"
    out = runner.invoke(plan_cli.prices, ["show", "--target", "vertex", "--json"])
    assert all(r["target"] == "vertex" and r["date"] and r["source"] for r in json.loads(out.output))
    out = runner.invoke(plan_cli.estimate, [str(tmp_path / "missing.yaml")])
    assert out.exit_code == 2 and "does not exist" in out.output


def test_estimate_imports_no_torch_transformers_or_sdk(tmp_path):
    path = write_spec(tmp_path)
    # modules present at interpreter start (e.g. a namespace stub a .pth file creates for google.cloud) are not
    # imports of ours; everything the command adds is checked
    code = textwrap.dedent(f"""
        import sys
        baseline = set(sys.modules)
        from click.testing import CliRunner
        from ftlaunch.cli import plan_cli
        r = CliRunner().invoke(plan_cli.estimate, [{str(path)!r}])
        assert r.exit_code == 0, r.output
        heavy = [m for m in set(sys.modules) - baseline if m.split('.')[0] in ('torch', 'transformers', 'boto3',
                 'botocore', 'azure', 'sky', 'peft', 'numpy') or m.startswith(('google.cloud', 'google.api_core'))]
        print(heavy)
        sys.exit(1 if heavy else 0)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- issue 14: plans you can trust

LLAMA8 = "meta-llama/Llama-3.1-8B"


@pytest.mark.parametrize("cloud", ["sagemaker", "vertex", "azureml", "skypilot"])
def test_an_explicit_one_gpu_request_is_never_silently_multi_gpu(tmp_path, cloud):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path, model=LLAMA8)), cloud=cloud, gpu="a100:1")
    assert p.offers and all(o.gpus == 1 or o.excluded for o in p.offers)
    if p.offer is not None:
        assert p.offer.gpus == 1 and p.offer.nodes == 1
        assert p.estimate["global_batch"] == {"per_device": 1, "devices": 1, "grad_accum": 1, "global": 1}
    else:  # no 1-GPU A100 on this cloud: said in one line, and the exit code says nothing was chosen
        assert any(f"{cloud} has no instance with 1 x A100" in w for w in p.estimate["warnings"])
        result = CliRunner().invoke(plan_cli.estimate, [str(write_spec(tmp_path, model=LLAMA8)), "--cloud", cloud,
                                                        "--gpu", "a100:1", "--json"])
        assert result.exit_code == plan_cli.NOTHING_FITS, result.output
        data = json.loads(result.output)
        assert data["chosen"] is None and data["warnings"]


def test_sagemaker_a100_1_names_the_8_gpu_instance_instead_of_choosing_it(tmp_path):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path, model=LLAMA8)), cloud="sagemaker", gpu="a100:1")
    assert p.offer is None
    assert "ml.p4d.24xlarge" in p.why and "--gpu a100:8" in p.why


def test_a_gpu_count_left_to_the_planner_keeps_the_global_batch(tmp_path):
    path = write_spec(tmp_path, model=LLAMA8, extra="")
    path.write_text(path.read_text().replace("batch_size: 1", "batch_size: 8"))
    p = plan_cli.estimate_plan(str(path), cloud="sagemaker", gpu="a100")  # 'a100': the count is not stated
    assert p.offer.gpus == 8
    batch = p.estimate["global_batch"]
    assert batch["global"] == 8 and batch["devices"] == 8 and batch["per_device"] == 1
    assert p.spec.resources.gpus == 8 and p.spec.hyperparameters.batch_size == 1  # what the request uploads
    assert any("keeps the global batch of 8" in w for w in p.estimate["warnings"])


def test_gpus_explicit_tells_the_default_from_a_stated_count(tmp_path):
    path = write_spec(tmp_path)
    assert not plan.gpus_explicit(spec_mod.load(path))
    assert plan.gpus_explicit(spec_mod.load(path, ("resources.gpu=a100:1",)))
    assert plan.gpus_explicit(spec_mod.load(path, ("resources.gpus=1",)))


def test_headroom_an_offer_at_97_percent_does_not_fit():
    from ftlaunch.planning import estimator, shapes
    from ftlaunch.core import gpus as gpu_catalog

    t4 = gpu_catalog.get("t4")
    assert 15.0 < t4.memory_gb < 16.5  # the driver's 15360 MiB, not the catalog's 16384 MiB (17.2 GB)
    shape = shapes.resolve("mistralai/Mistral-7B-v0.3")  # QLoRA 8 x 1024: the 15.8 GB
    w = estimator.Workload(technique=estimator.Technique.QLORA, batch_size=8, seq_len=1024)
    mem = estimator.memory(shape, w, 1)
    assert mem.peak_gb <= t4.memory_gb  # it would squeeze in with no margin ...
    assert mem.peak_gb > estimator.HEADROOM * t4.memory_gb and not estimator.fits(mem, t4)  # ... so it does not fit
    h100 = gpu_catalog.get("h100")
    assert estimator.fits(dataclasses.replace(mem, overhead=mem.overhead + (0.89 * h100.memory_gb * 1e9 - mem.peak)), h100)
    assert not estimator.fits(dataclasses.replace(mem, overhead=mem.overhead + (0.97 * h100.memory_gb * 1e9 - mem.peak)),
                              h100)


def test_every_memory_figure_in_estimate_json_is_in_gb(tmp_path):
    result = CliRunner().invoke(plan_cli.estimate, [str(write_spec(tmp_path, model=LLAMA8)), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["memory_unit"] == "GB"
    for breakdown in [data["estimate"]["memory"]] + [o["details"]["memory"] for o in [data["chosen"]]]:
        assert breakdown["unit"] == "GB"
        terms = {k: v for k, v in breakdown.items() if k.endswith("_gb")}
        assert set(terms) == {"weights_gb", "gradients_gb", "optimizer_gb", "activations_gb", "logits_gb",
                              "overhead_gb", "peak_gb"}
        # every term in GB: they add up to the peak, and none is a byte count
        assert sum(v for k, v in terms.items() if k != "peak_gb") == pytest.approx(terms["peak_gb"], abs=0.01)
        assert all(0 <= v < 1e4 for v in terms.values())
        assert not any(k in breakdown for k in ("weights", "activations", "logits"))


def test_hints_are_replanned_and_hold_when_followed(tmp_path):
    path = write_spec(tmp_path, model="meta-llama/Llama-3.1-70B", technique="full")
    path.write_text(path.read_text().replace("batch_size: 1", "batch_size: 8"))
    p = plan_cli.estimate_plan(str(path), cloud="skypilot", gpu="h100:1")
    assert p.offer is None and p.estimate["suggestions"]
    for hint in p.estimate["suggestions"]:
        assert hint["replanned"]
        followed = spec_mod.load(path, ("resources.cloud=skypilot", "resources.gpu=h100:1") + tuple(hint["overrides"]))
        from ftlaunch.planning import estimator, shapes
        from ftlaunch.core import gpus as gpu_catalog

        gpu = gpu_catalog.get(followed.resources.gpu)
        mem = estimator.memory(shapes.resolve(followed.model), estimator.workload_from_spec(followed, gpu),
                               followed.resources.gpus * followed.resources.nodes)
        assert mem.peak_gb == pytest.approx(hint["peak_gb"], abs=0.01) and estimator.fits(mem, gpu)


def test_lora_is_sharded_where_replicas_do_not_fit(tmp_path):
    path = write_spec(tmp_path, model="meta-llama/Llama-3.1-70B", technique="lora")
    p = plan_cli.estimate_plan(str(path), cloud="skypilot", gpu="h100:8")
    assert p.offer is not None and p.offer.gpu == "H100" and p.offer.details.get("distributed") == "fsdp"
    assert p.spec.resources.distributed == "fsdp" and "FSDP" in p.why


def test_node_count_is_in_the_summary(tmp_path):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path, model=LLAMA8)), cloud="skypilot", gpu="h100:8",
                               overrides=("resources.nodes=2",))
    assert "2 nodes x 8 x H100 = 16 GPUs" in p.why


def test_doubtful_prices_are_shown_marked_and_never_chosen(tmp_path):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path, model=LLAMA8)), cloud="skypilot", gpu="h100")
    doubtful = [o for o in p.offers if "doubtful" in o.flags]
    assert doubtful and all(o.excluded for o in doubtful)
    assert "doubtful" not in p.offer.flags
    cheaper = [o for o in doubtful if o.fits and o.cost[0] < p.offer.cost[0]]
    assert cheaper, "the test needs a doubtful row that would have won"
    result = CliRunner().invoke(plan_cli.estimate, [str(write_spec(tmp_path, model=LLAMA8)), "--cloud", "skypilot",
                                                    "--gpu", "h100"], env={"COLUMNS": "250"})
    assert " !" in result.output and "doubtful" in result.output


def test_stale_and_derived_prices_are_marked_and_warned(tmp_path):
    from ftlaunch.planning.catalog import prices

    old = prices.PriceRow("sagemaker", "ml.x", "A100", 1, "r", 1.0, None, "before 2025-06", "fmbench")
    assert old.flags() == ["stale"]
    assert prices.PriceRow("vertex", "x", "A100", 1, "r", 1.0, None, "2026-11-27", "derived: x").flags() == ["derived"]
    p = plan_cli.estimate_plan(str(write_spec(tmp_path, model=LLAMA8)), cloud="sagemaker", gpu="l4")
    assert p.offer is not None
    for flag, words in (("stale", "more than"), ("derived", "derived")):
        assert (flag in p.offer.flags) == any(words in w for w in p.estimate["warnings"])


def test_max_cost_below_the_high_end_warns_with_the_fix(tmp_path):
    path = write_spec(tmp_path, model=LLAMA8)
    p = plan_cli.estimate_plan(str(path))
    budget = round((p.offer.cost[0] + p.offer.cost[1]) / 2, 2)
    capped = plan_cli.estimate_plan(str(path), overrides=(f"resources.max_cost={budget}",))
    warning = next(w for w in capped.estimate["warnings"] if "max_cost" in w)
    assert "raise resources.max_cost" in warning and "--spot" in warning
    result = CliRunner().invoke(plan_cli.estimate, [str(path), "--set", f"resources.max_cost={budget}"],
                                env={"COLUMNS": "250"})
    assert "warning: max_cost" in result.output


def test_one_default_max_runtime_for_every_backend(tmp_path):
    for cloud in plan.TARGETS:
        p = plan_cli.estimate_plan(str(write_spec(tmp_path, model=LLAMA8)), cloud=cloud)
        assert p.max_runtime_s == max(3600, int(-(-p.offer.hours[1] * plan.MAX_RUNTIME_FACTOR * 3600 // 1)))
        assert "default" in p.estimate["max_runtime"]


def test_targets_that_would_refuse_are_dropped_before_ranking(tmp_path):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path, model=LLAMA8)), cloud="auto",
                               overrides=("resources.region=eastus",))
    assert not any(o.cloud == "azureml" for o in p.offers)
    assert any(d["target"] == "azureml" and "region" in d["reason"] for d in p.estimate["dropped"])
    assert backends.facts("azureml").unsupported[Capability.REGION].startswith("an Azure ML job runs")
    assert Capability.MULTI_NODE in backends.facts("local").unsupported


def test_needs_are_derived_from_the_spec(tmp_path):
    spec = spec_mod.load(write_spec(tmp_path), ("resources.cloud=sagemaker", "resources.spot=true",
                                                "resources.nodes=2", "resources.runtime=docker",
                                                "resources.max_runtime=2h"))
    assert plan.needs(spec) == {Capability.SPOT, Capability.MULTI_NODE, Capability.DOCKER, Capability.MAX_RUNTIME}
    assert plan.needs(spec_mod.load(write_spec(tmp_path), ("resources.runtime=process",))) == set()


def test_a_cloud_asked_for_the_docker_runtime_is_refused_before_render(tmp_path):
    from ftlaunch import cli

    result = CliRunner().invoke(cli.main_group, ["--cloud", "sagemaker", "--runtime", "docker", "--dry-run",
                                           str(write_spec(tmp_path, model=LLAMA8))])
    assert result.exit_code == 2, result.output
    assert "sagemaker cannot do docker" in result.output and "drop --runtime" in result.output


def test_local_claims_no_gpu_without_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLAUNCH_NVIDIA_PROC", str(tmp_path / "no-such-dir"))
    monkeypatch.setenv("FTLAUNCH_CALIBRATE", "0")
    p = plan_cli.estimate_plan(str(write_spec(tmp_path)), cloud="local", gpu="a100")
    assert p.offer.gpu is None and p.offer.gpus == 0 and p.offer.fits is None
    assert "no NVIDIA GPU" in p.why and "a100 is not here" in p.why


def test_local_gpu_is_read_from_the_driver(tmp_path, monkeypatch):
    info = tmp_path / "gpus" / "0000:00:1e.0"
    info.mkdir(parents=True)
    (info / "information").write_text("Model: \t\t NVIDIA L4\nIRQ: 42\n")
    monkeypatch.setenv("FTLAUNCH_NVIDIA_PROC", str(tmp_path / "gpus"))
    monkeypatch.setenv("FTLAUNCH_CALIBRATE", "0")
    p = plan_cli.estimate_plan(str(write_spec(tmp_path)), cloud="local")
    assert p.offer.gpu == "L4" and p.offer.gpus == 1 and p.offer.fits is not None


def test_local_time_estimate_within_2x_of_a_measured_tiny_run(tiny_spec, tiny_lm, monkeypatch):
    """Calibrate (a real measurement, cached), then time real training steps of the tiny LoRA job. The machine
    is shared (other processes take the CPU for seconds at a time), so up to three fresh attempts are made."""
    import time as _time

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ftlaunch.planning import calibrate

    monkeypatch.setenv("FTLAUNCH_NVIDIA_PROC", "/nonexistent")  # CPU, as the run below
    s = spec_mod.load(tiny_spec)
    hp = s.hyperparameters
    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    base.gradient_checkpointing_enable()  # as the trainer: checkpointing on, then peft (which makes inputs need grad)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.05))
    model.train()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (hp.batch_size, hp.max_length))

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()

    ratios = []
    for _ in range(3):
        calibrate.cache_path().unlink(missing_ok=True)
        assert plan.make(s).estimate["time"] is None  # a dry run measures nothing
        p = plan.make(s, calibrate=True)
        t = p.estimate["time"]
        assert t is not None and calibrate.cache_path().exists() and p.offer.hours
        assert plan.make(s).estimate["time"]["calibrated"] == t["calibrated"]  # measured once, then cached and shown
        step()
        step()
        times = []
        for _ in range(hp.max_steps):
            start = _time.perf_counter()
            step()
            times.append(_time.perf_counter() - start)
        measured_h = min(times) * hp.max_steps / 3600  # the fastest step, as calibrate.measure
        ratios.append(measured_h / t["compute_hours"][1])  # max_steps x batch x max_length tokens: the high end
        if 0.5 <= ratios[-1] <= 2.0:
            break
    assert 0.5 <= ratios[-1] <= 2.0, ratios


def test_recommend_never_rests_on_a_doubtful_price():
    data = plan_cli.recommendation("meta-llama/Llama-3.1-8B", "chat")
    from ftlaunch.planning.catalog import prices

    row = next(r for r in prices.load() if (r.target, r.instance) == (data["choice"]["target"], data["choice"]["instance"]))
    assert not row.doubtful
