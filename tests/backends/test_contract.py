"""The same cases for every backend in the registry: the quickstart renders to a JSON-serialisable request that
names the job, rendering is pure, and every capability a backend declares it lacks (FACTS.unsupported) is really
refused by the planner, with the backend's reason, for a spec that needs it (and only then)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ftlaunch import backends
from ftlaunch.core import errors, spec as spec_mod
from ftlaunch.planning import plan as plan_mod
from ftlaunch.backends.base import Capability

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
JOB_NAME = "quickstart-20260101-000000-abcd"
# One spec change that makes a job need each capability (plan.needs derives them from the spec). A capability a
# backend declares it lacks must be here, so that the planner can be shown to refuse it.
NEEDING = {
    Capability.MULTI_NODE: ("resources.nodes=2",),
    Capability.SPOT: ("resources.spot=true",),
    Capability.REGION: ("resources.region=us-east-1",),
    Capability.DOCKER: ("resources.runtime=docker",),
    Capability.MAX_RUNTIME: ("resources.max_runtime=2h",),
}
DECLARED = [(f.name, cap) for f in backends.all_facts() for cap in f.unsupported]


@pytest.fixture(autouse=True)
def unconfigured(monkeypatch, tmp_path):
    """No settings, credentials or engine from the machine running the tests: placeholders render instead."""
    for key in list(os.environ):
        if key.startswith(("FTLAUNCH_", "AWS_", "GOOGLE_", "AZURE_", "DOCKER_", "CONTAINER_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("FTLAUNCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FTLAUNCH_CALIBRATE", "0")


def _spec(name: str, *overrides: str) -> spec_mod.Spec:
    gpu = ("resources.gpu=a100",) if backends.facts(name).cloud else ()
    return spec_mod.load(QUICKSTART, (f"resources.cloud={name}", *gpu, *overrides))


@pytest.mark.parametrize("name", backends.NAMES)
def test_render_of_the_quickstart_is_json_and_names_the_job(name, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_contract_secret_value")
    plan = plan_mod.make(_spec(name, "secrets=[HF_TOKEN]"), name=JOB_NAME)
    backend = backends.get(name)
    request = backend.render(plan)
    text = json.dumps(request.to_json())
    assert request.backend == name == plan.cloud and request.job_name == JOB_NAME
    assert JOB_NAME in json.dumps(request.payload), "the provider's request must name the job"
    assert json.dumps(backend.render(plan).to_json()) == text, "render must be pure: the same plan, the same request"
    assert "HF_TOKEN" in text and "hf_contract_secret_value" not in text, "secrets go by name, never by value"


@pytest.mark.parametrize("name", backends.NAMES)
def test_facts_are_complete(name):
    facts = backends.facts(name)
    assert facts.name == name and facts.title and facts.extra and facts.sdk
    low, high = facts.startup_min
    assert 0 < low <= high
    assert callable(backends.settings_module(name).resolve)
    assert all(reason.strip() and ("drop" in reason or "use" in reason) for reason in facts.unsupported.values()), \
        "each reason says what to do instead"


@pytest.mark.parametrize("name, capability", DECLARED, ids=[f"{n}-{c.value}" for n, c in DECLARED])
def test_each_declared_gap_is_refused_by_the_planner(name, capability):
    assert capability in NEEDING, f"add a spec change that needs {capability} to NEEDING"
    spec = _spec(name, *NEEDING[capability])
    assert capability in plan_mod.needs(spec)
    reason = backends.facts(name).unsupported[capability]
    with pytest.raises(errors.UserError) as info:
        plan_mod.make(spec, name=JOB_NAME)
    assert info.value.exit_code == 2 and reason in info.value.render()
    if not backends.facts(name).cloud:
        return
    # ranked among all clouds: dropped before ranking with the reason shown (or, when no cloud can, refused)
    if all(capability in backends.facts(c).unsupported for c in backends.CLOUDS):
        with pytest.raises(errors.UserError, match="no target can run this job") as info:
            plan_mod.make(spec, name=JOB_NAME, targets=backends.CLOUDS, require_fit=False)
        assert reason in info.value.render()
    else:
        p = plan_mod.make(spec, name=JOB_NAME, targets=backends.CLOUDS, require_fit=False)
        assert not any(o.cloud == name for o in p.offers)
        assert any(d["target"] == name and reason in d["reason"] for d in p.estimate["dropped"])


@pytest.mark.parametrize("name", backends.NAMES)
def test_what_a_backend_does_not_declare_is_not_refused(name):
    for capability, overrides in NEEDING.items():
        if capability not in backends.facts(name).unsupported:
            assert plan_mod.refusals(_spec(name, *overrides), name) == []


SCHEMES = {"s3": "s3://bucket/data/train.jsonl", "gs": "gs://bucket/data/train.jsonl",
           "azureml": "azureml://datastores/workspaceblobstore/paths/data/train.jsonl",
           "az": "az://container/data/train.jsonl", "hf": "hf://datasets/org/name"}


@pytest.mark.parametrize("name", [f.name for f in backends.all_facts()])
@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_a_dataset_uri_reaches_the_job_or_is_refused_at_plan_time(name, scheme):
    """Issue 13: an s3://, gs://, az:// or azureml:// dataset either reaches the job the way the backend declares
    (FACTS.reads, and the plan says how) or the planner refuses that backend with the reason and the fix."""
    uri = SCHEMES[scheme]
    s = spec_mod.load(QUICKSTART, (f"resources.cloud={name}", f"dataset.path={uri}"))
    reads = backends.facts(name).reads
    if scheme not in reads:
        with pytest.raises(errors.UserError) as info:
            plan_mod.make(s, name=JOB_NAME)
        text = info.value.render()
        assert f"cannot read {scheme}:// data (dataset.path {uri})" in text and "local path" in text
        return
    plan = plan_mod.make(s, name=JOB_NAME)
    assert plan.cloud == name and plan.estimate["data"] == [f"dataset.path {uri}: {reads[scheme]}"]
    request = backends.get(name).render(plan)
    job_spec = json.dumps(request.to_json())
    assert not any(u.get("source") == uri for u in request.uploads)  # read where it is, never uploaded
    assert uri in job_spec or uri.split("://", 1)[1] in job_spec  # the job is pointed at it


def test_auto_drops_clouds_that_cannot_read_the_data_before_ranking():
    s = spec_mod.load(QUICKSTART, ("resources.cloud=auto", "dataset.path=gs://bucket/data/train.jsonl"))
    plan = plan_mod.make(s, name=JOB_NAME)
    assert {o.cloud for o in plan.offers} == {"vertex", "skypilot"}
    dropped = {d["target"]: d["reason"] for d in plan.estimate["dropped"]}
    assert set(dropped) == {"sagemaker", "azureml"} and "cannot read gs:// data" in dropped["sagemaker"]
