"""Planning across targets: offers ranked by predicted cost or time, the cheapest that fits chosen, max_cost as a
runtime cap, the CLI commands, and no heavy imports on the way."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftlaunch import errors, plan, plan_cli
from ftlaunch import spec as spec_mod


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


def test_max_cost_becomes_the_maximum_runtime(tmp_path):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path)), overrides=("resources.max_cost=20",))
    assert p.max_runtime_s == int(20 / p.offer.price_per_hour * 3600)
    broke = plan_cli.estimate_plan(str(write_spec(tmp_path)), overrides=("resources.max_cost=0.01",))
    assert broke.offer is None and "max_cost" in broke.why


def test_spot_offers_use_spot_prices(tmp_path):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path)), overrides=("resources.spot=true",))
    assert all(o.spot and o.price_per_hour == pytest.approx(o.spot_price_per_hour, abs=1e-4) for o in p.offers)


def test_one_cloud_and_gpu_count(tmp_path):
    p = plan_cli.estimate_plan(str(write_spec(tmp_path)), cloud="vertex", gpu="a100:8")
    assert {(o.cloud, o.gpu, o.gpus) for o in p.offers} == {("vertex", "A100", 8)}
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
        from ftlaunch import plan_cli
        r = CliRunner().invoke(plan_cli.estimate, [{str(path)!r}])
        assert r.exit_code == 0, r.output
        heavy = [m for m in set(sys.modules) - baseline if m.split('.')[0] in ('torch', 'transformers', 'boto3',
                 'botocore', 'azure', 'sky', 'peft', 'numpy') or m.startswith(('google.cloud', 'google.api_core'))]
        print(heavy)
        sys.exit(1 if heavy else 0)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
