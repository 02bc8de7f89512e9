"""The image a job runs, between the plan and the submit: which reference a cloud plan's request names
(a prebuilt `--image`, else the content-tagged build in that cloud's registry), what a launch would build or
push (the dry run's one line), and making sure the image is there before submit (build only when the tag is in
neither the local engine nor the registry; push only when the registry lacks it). Used by a launch, `ftlaunch
build` and the bench alike."""

from __future__ import annotations

import dataclasses
from typing import Any

from ftlaunch import backends
from ftlaunch.core import errors


def build_and_push(options: Any, *, cloud: str = "local", registry: str | None = None, region: str | None = None,
                   tag: str | None = None, engine: Any = None, on_line: Any = None) -> dict[str, Any]:
    """Computing and doing, without printing: returns {image, tag, built, pushed, pulled, found, registry}."""
    from ftlaunch.containers import engine as engine_mod
    from ftlaunch.containers import image
    from ftlaunch.containers import registry as registry_mod

    engine = engine or engine_mod.detect()
    if engine is None:
        raise errors.UserError(f"cannot build the job image: {engine_mod.why_none()}.",
                               hint="start Docker or podman, or set DOCKER_HOST to an engine that answers")
    if registry is None and cloud not in ("local", "auto"):
        settings = backends.settings_module(cloud)
        if not hasattr(settings, "default_registry"):  # Azure ML and SkyPilot have none to guess
            raise errors.UserError(f"--cloud {cloud}: there is no default registry to push the job image to.",
                                   hint="pass --registry HOST[/PATH] (e.g. NAME.azurecr.io for Azure ML, any "
                                        "registry your SkyPilot nodes can pull from)")
        registry = settings.default_registry(region)
    if registry is not None:
        login = registry_mod.login(registry)
        if login is not None:
            engine.login(login.registry, login.username, login.password)
    outcome = image.ensure(engine, options, registry=registry, need_local=registry is None, tag=tag, on_line=on_line)
    return {"image": outcome.ref, "tag": outcome.tag, "built": outcome.built, "pushed": outcome.pushed,
            "pulled": outcome.pulled, "found": outcome.found, "registry": registry}


def configured_registry(cloud: str) -> str | None:
    """The registry a cloud's settings name (FTLAUNCH_ECR_REGISTRY, ... or config.yaml), where its launches
    push: so `ftlaunch build --cloud X` and a launch on X push to the same place. None when unset."""
    if cloud == "auto" or not backends.facts(cloud).cloud:
        return None
    from ftlaunch.backends import base

    return base.settings(cloud, backends.settings_module(cloud).TABLE).get("registry")


def describe(result: dict[str, Any]) -> str:
    if result["built"]:
        what = "built"
    elif result["found"] == "registry":
        what = f"already in {result['registry']}: nothing built"
    else:
        what = "already built here: nothing built"
    text = f"{result['image']}: {what}"
    if result["pushed"]:
        text += f", pushed to {result['registry']}"
    return text


# ---------------------------------------------------------------- the image of a cloud launch
# A cloud launch is image + job: before submit, the content-tagged image the request names is made sure to
# be in that cloud's registry (built only when the tag is neither here nor there, pushed only when the
# registry lacks it); a prebuilt image is used as given. `image_step` computes, `foresee` words what a launch
# would do (the dry run's one line), `ensure_image` does it: computing apart from printing and doing.

@dataclasses.dataclass(frozen=True)
class ImageStep:
    """What a cloud launch does about its image, read from the plan that settings resolved (no I/O)."""

    ref: str  # exactly what the request names
    registry: str  # where the job pulls it from
    tag: str | None
    build: dict[str, Any] | None  # the build options and tag; None for a prebuilt image (used as given)

    @property
    def prebuilt(self) -> bool:
        return self.build is None

    def options(self) -> Any:
        """The build options the plan resolved (containers.image.BuildOptions); only for a step that builds."""
        from ftlaunch.containers import image

        return image.BuildOptions(**{k: v for k, v in self.build.items() if k != "tag"})


def choose_image(plan: Any, given: str | None = None) -> None:
    """Sets plan.image for a cloud plan: `given` (`--image REF`: used as given, nothing is built or pushed),
    else what settings resolved. Changes only the plan; a local plan keeps its own image."""
    if plan.cloud == "local":
        if given:
            raise errors.UserError("--image applies to cloud launches; a local run builds its own image when its "
                                   "tag is missing.",
                                   hint=f"drop --image, or launch with --cloud {'|'.join(backends.CLOUDS)}")
        return
    if given:
        plan.context.update({"image": given, "image_tag": None, "image_build": None})
    if "image" in plan.context:
        plan.image = plan.context["image"]


def image_step(plan: Any) -> ImageStep | None:
    """The image step of a cloud plan; None for a local plan (its own submit builds what it runs)."""
    ctx = plan.context or {}
    if plan.cloud == "local" or "image" not in ctx:
        return None
    ref = plan.image or ctx["image"]
    build = ctx.get("image_build") if ref == ctx["image"] else None
    return ImageStep(ref=ref, registry=ctx.get("registry") or "", tag=ctx.get("image_tag"), build=build)


def dry_run(plan: Any, engine: Any = None) -> dict[str, Any] | None:
    """What a launch of this plan would do about its image, asking the engine and registry but changing
    nothing: {image, tag, prebuilt, here, in_registry, summary}; None for a local plan."""
    step = image_step(plan)
    if step is None:
        return None
    found = probe(step, engine)
    return {"image": step.ref, "tag": step.tag, "prebuilt": step.prebuilt, "here": found["local"],
            "in_registry": found["remote"], "summary": foresee(step, found)}


def probe(step: ImageStep, engine: Any = None, env: Any = None) -> dict[str, bool | None]:
    """Whether the tag is in the engine here and in the registry: True, False, or None (not reachable).
    Builds, pushes and logs in to nothing; an unconfigured registry is not asked."""
    from ftlaunch.backends import base
    from ftlaunch.containers import engine as engine_mod
    from ftlaunch.containers import image

    if step.prebuilt:
        return {"local": None, "remote": None}
    engine = engine or engine_mod.detect(env)
    if engine is None:
        return {"local": None, "remote": None}
    local = engine.image_exists(image.local_ref(step.options(), step.tag))
    remote = None if base.is_placeholder(step.registry) else engine.remote_lookup(step.ref, timeout=20)
    return {"local": local, "remote": remote}


def foresee(step: ImageStep, found: dict[str, bool | None]) -> str:
    """One line: whether a launch would build and push the image (pure)."""
    if step.prebuilt:
        return f"image {step.ref}: prebuilt, used as given: nothing to build or push"
    local, remote = found.get("local"), found.get("remote")
    if remote:
        return f"image {step.ref}: already in the registry: nothing to build or push"
    if local is None and remote is None:
        return f"image {step.ref}: unknown: no engine/registry reachable"
    if remote is None:
        build = "no build (built here)" if local else "would build"
        return f"image {step.ref}: {build}; push unknown: registry {step.registry} not reachable"
    if local:
        return f"image {step.ref}: would push (built here, not in the registry); no build"
    return f"image {step.ref}: would build and push (in neither this engine nor the registry)"


def ensure_image(plan: Any, request: Any, *, engine: Any = None, on_line: Any = None) -> dict[str, Any] | None:
    """Makes sure the image the request names is in the cloud's registry: builds only when the tag is neither
    here nor there, pushes only when the registry lacks it; nothing for a prebuilt image or a local plan.
    Returns build_and_push's result, or None when there was nothing to do."""
    from ftlaunch.backends import base
    from ftlaunch.containers import engine as engine_mod

    step = image_step(plan)
    if step is None or step.prebuilt:
        return None
    base.refuse_placeholders(request)  # an unconfigured registry: say which settings, before any build
    engine = engine or engine_mod.detect()
    if engine is None:
        raise errors.UserError(f"--cloud {plan.cloud}: the job image {step.ref} is built and pushed when missing, "
                               f"which needs a container engine, and {engine_mod.why_none()}.",
                               hint="start Docker or podman (or set DOCKER_HOST), or launch a prebuilt image with "
                                    "--image REF")
    result = build_and_push(step.options(), registry=step.registry, tag=step.tag, engine=engine, on_line=on_line)
    if result["image"] != step.ref:
        raise errors.UserError(f"the image pushed ({result['image']}) is not the one the request names ({step.ref}).",
                               hint="report this as a bug in ftlaunch")
    return result
