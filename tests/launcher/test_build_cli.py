"""The image of a cloud launch, without an engine: every cloud's request names the same content tag, a
prebuilt image (--image, FTLAUNCH_<CLOUD>_IMAGE, FTLAUNCH_IMAGE_TAG) is used as given, and the dry run's one
line says what a launch would build and push. tests/containers/test_image.py does it with a real engine."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftlaunch.planning import image as plan_image
from ftlaunch import cli
from ftlaunch.core import errors
from ftlaunch.containers import image

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"
CLOUDS = {  # the request field that names the image, per cloud
    "sagemaker": lambda p: p["AlgorithmSpecification"]["TrainingImage"],
    "vertex": lambda p: p["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["imageUri"],
    "azureml": lambda p: p["environment"]["image"],
    "skypilot": lambda p: p["resources"]["image_id"].removeprefix("docker:"),
}


def dry_run(*args: str) -> dict:
    result = CliRunner().invoke(cli.main_group, [*args, "--gpu", "a100", "--dry-run", "--json", str(QUICKSTART)])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture
def no_engine(monkeypatch):
    """No engine answers: the dry run must still compute the tag."""
    monkeypatch.setenv("FTLAUNCH_ENGINE", "docker")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    for name in ("FTLAUNCH_IMAGE_TAG", "FTLAUNCH_BASE_IMAGE", "FTLAUNCH_BUILD_CA", "FTLAUNCH_SAGEMAKER_IMAGE",
                 "FTLAUNCH_VERTEX_IMAGE", "FTLAUNCH_AZUREML_IMAGE", "FTLAUNCH_SKYPILOT_IMAGE"):
        monkeypatch.delenv(name, raising=False)


def test_every_cloud_names_the_same_content_tag(no_engine):
    tag = image.content_tag(image.BuildOptions())
    for cloud, field in CLOUDS.items():
        out = dry_run("--cloud", cloud)
        ref = field(out["request"]["payload"])
        assert ref.endswith(f"/ftlaunch-trainer:{tag}"), (cloud, ref)
        assert out["plan"]["image"] == ref == out["image"]["image"]  # the job record names it too
        assert out["image"]["tag"] == tag and not out["image"]["prebuilt"]
        assert out["image"]["summary"] == f"image {ref}: unknown: no engine/registry reachable"


def test_the_tag_follows_the_build_options(no_engine, monkeypatch):
    monkeypatch.setenv("FTLAUNCH_BASE_IMAGE", "sagemaker")
    out = dry_run("--cloud", "vertex")
    tag = image.content_tag(image.BuildOptions(base_image=image.BASE_IMAGES["sagemaker"]))
    assert tag != image.content_tag(image.BuildOptions())
    assert CLOUDS["vertex"](out["request"]["payload"]).endswith(f":{tag}")


def test_a_prebuilt_image_is_used_as_given(no_engine, monkeypatch):
    out = dry_run("--cloud", "azureml", "--image", "myreg.azurecr.io/trainer:v7")
    assert CLOUDS["azureml"](out["request"]["payload"]) == "myreg.azurecr.io/trainer:v7"
    assert out["image"]["prebuilt"] and "nothing to build or push" in out["image"]["summary"]

    monkeypatch.setenv("FTLAUNCH_SAGEMAKER_IMAGE", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/own:1")
    out = dry_run("--cloud", "sagemaker")
    assert CLOUDS["sagemaker"](out["request"]["payload"]) == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/own:1"
    assert out["image"]["prebuilt"]

    monkeypatch.setenv("FTLAUNCH_IMAGE_TAG", "release-3")
    out = dry_run("--cloud", "skypilot")
    assert CLOUDS["skypilot"](out["request"]["payload"]).endswith("/ftlaunch-trainer:release-3")
    assert out["image"]["prebuilt"]


def test_image_option_is_for_cloud_launches():
    result = CliRunner().invoke(cli.main_group, ["--cloud", "local", "--image", "x:1", "--dry-run", str(QUICKSTART)])
    assert result.exit_code == 2 and "--image applies to cloud launches" in result.output


def test_the_dry_run_prints_one_line_about_the_image(no_engine):
    result = CliRunner().invoke(cli.main_group, ["--cloud", "vertex", "--gpu", "a100", "--dry-run", str(QUICKSTART)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("image ")]
    assert len(lines) == 1 and lines[0].endswith("unknown: no engine/registry reachable")


def test_what_a_launch_would_do():
    step = plan_image.ImageStep(ref="reg.example/ftlaunch-trainer:abc", registry="reg.example", tag="abc",
                               build={"tag": "abc"})
    say = lambda local, remote: plan_image.foresee(step, {"local": local, "remote": remote})  # noqa: E731
    assert say(False, False).endswith("would build and push (in neither this engine nor the registry)")
    assert say(True, False).endswith("would push (built here, not in the registry); no build")
    assert say(False, True).endswith("already in the registry: nothing to build or push")
    assert say(None, None).endswith("unknown: no engine/registry reachable")
    assert say(True, None).endswith("no build (built here); push unknown: registry reg.example not reachable")
    assert say(False, None).endswith("would build; push unknown: registry reg.example not reachable")
    prebuilt = dataclasses.replace(step, build=None)
    assert plan_image.foresee(prebuilt, {}).endswith("prebuilt, used as given: nothing to build or push")


def test_an_unconfigured_registry_stops_the_launch_before_any_build(no_engine):
    prepared = cli.prepare(str(QUICKSTART), {"cloud": "sagemaker", "gpu": "a100"})

    class NoEngine:
        def __getattr__(self, name):
            raise AssertionError(f"the engine was used ({name}) for an unconfigured registry")

    with pytest.raises(errors.UserError) as info:
        plan_image.ensure_image(prepared.plan, prepared.request, engine=NoEngine())
    assert "FTLAUNCH_ECR_REGISTRY" in str(info.value)


def test_build_pushes_where_the_launch_does(monkeypatch):
    monkeypatch.setenv("FTLAUNCH_ECR_REGISTRY", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team")
    monkeypatch.delenv("FTLAUNCH_ARTIFACT_REGISTRY", raising=False)
    assert plan_image.configured_registry("sagemaker") == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team"
    assert plan_image.configured_registry("vertex") is None  # unset: `build` asks the cloud for its default
    assert plan_image.configured_registry("local") is None


def test_a_local_plan_has_no_image_step():
    prepared = cli.prepare(str(QUICKSTART), {"cloud": "local", "runtime": "process"})
    before = prepared.plan.image
    plan_image.choose_image(prepared.plan)
    assert prepared.plan.image == before and plan_image.image_step(prepared.plan) is None
    assert plan_image.ensure_image(prepared.plan, prepared.request, engine=object()) is None


def test_a_launch_without_an_engine_says_how_to_go_on(no_engine, monkeypatch):
    for key, value in {"FTLAUNCH_SAGEMAKER_ROLE": "arn:aws:iam::123456789012:role/x", "FTLAUNCH_S3_BUCKET": "b",
                       "FTLAUNCH_ECR_REGISTRY": "123456789012.dkr.ecr.us-east-1.amazonaws.com"}.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli.main_group, ["--cloud", "sagemaker", "--gpu", "a100", "--detach", str(QUICKSTART)])
    assert result.exit_code == 2, result.output
    assert "needs a container engine" in result.output and "--image REF" in result.output
    assert "submitted" not in result.output  # nothing reached the provider
