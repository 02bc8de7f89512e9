"""The job image: its Dockerfile, its build context, its content-addressed tag, and building it only when needed.

One image serves every backend: a PyTorch base (a build argument), the locked requirements of the
trainer and of the backends' in-job entries, the ftlaunch sources they import, root as the default user
(the clouds need it; local runs pass `--user`), the trainer as entrypoint. Its tag is a hash of the
rendered Dockerfile, requirements.lock and those sources (plus any build option that changes the
context), so an unchanged relaunch finds the tag (locally or in the registry) and builds nothing.

    python -m ftlaunch.containers.image lock       # rewrite containers/requirements.lock from this venv
    python -m ftlaunch.containers.image dockerfile # print the Dockerfile
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from importlib import metadata, resources
from pathlib import Path
from typing import Callable, Iterator, Mapping

from ftlaunch.core import errors

REPOSITORY = "ftlaunch-trainer"
DEFAULT_BASE_IMAGE = "pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime"
# Bases by short name (`--base sagemaker`): each installs the lock (Python >= 3.11, torch >= 2.5; see
# base_check.py). pytorch/pytorch is Python 3.11; SageMaker's PyTorch 2.8 training image is Python 3.12.
BASE_IMAGES = {
    "pytorch": DEFAULT_BASE_IMAGE,
    "sagemaker": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312-cu129-ubuntu22.04-sagemaker",
}
# Names once offered whose images cannot install the lock: why, for the error that replaces them.
DROPPED_BASES = {
    "vertex": "Vertex AI's prebuilt PyTorch training images (pytorch-gpu.2-4.py310) are Python 3.10",
    "azureml": "Azure ML's ACPT images are Python 3.10 (acpt-pytorch-2.8-cuda12.6; acpt-pytorch-2.2 also "
               "has torch 2.2)",
}
LOCK_FILE = "requirements.lock"
BASE_CHECK = "base_check.py"  # the build's first step: the base's Python and torch fit the lock, or one line why
# The ftlaunch packages a job imports, shipped as .py sources: the trainer and every backend's in-job
# entry (`python -m ftlaunch.backends.<cloud>.entry`). Templates stay out: nothing in a job renders one.
SHIPPED_PACKAGES = ("ftlaunch", "ftlaunch.containers", "ftlaunch.backends")
# Distributions the base image provides: torch and what only torch needs (its CUDA libraries, triton).
FROM_BASE = ("torch",)
# Which extras of the ftlaunch distribution a job needs, besides its core dependencies: the trainer's
# (`train`) and the in-job entries' (`job`: the clouds' identity and secret clients).
JOB_EXTRAS = ("train", "job")


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What the image is built from. Anything that changes the build context is part of the tag."""

    base_image: str = DEFAULT_BASE_IMAGE
    repository: str = REPOSITORY
    ca_bundle: str | None = None  # a CA bundle copied in so pip trusts an intercepting proxy
    wheelhouse: str | None = None  # wheels to install from, with no package index: a folder or a URL
    network: str | None = None  # the build's network (`host` where the engine has no bridge)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def options_from_env(env: Mapping[str, str], **overrides: str | None) -> BuildOptions:
    """Build options from FTLAUNCH_BASE_IMAGE, FTLAUNCH_BUILD_CA, FTLAUNCH_WHEELHOUSE, FTLAUNCH_BUILD_NETWORK,
    then explicit overrides (None leaves a value as it is)."""
    values = {
        "base_image": resolve_base(env.get("FTLAUNCH_BASE_IMAGE") or DEFAULT_BASE_IMAGE),
        "ca_bundle": env.get("FTLAUNCH_BUILD_CA") or None,
        "wheelhouse": env.get("FTLAUNCH_WHEELHOUSE") or None,
        "network": env.get("FTLAUNCH_BUILD_NETWORK") or None,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["base_image"] = resolve_base(values["base_image"])
    for key in ("ca_bundle", "wheelhouse"):
        if values[key] and "://" not in values[key]:
            values[key] = str(Path(values[key]).expanduser().resolve())
    return BuildOptions(**values)


def resolve_base(name: str) -> str:
    """A short name from BASE_IMAGES (pytorch, sagemaker) or any image reference."""
    if name in DROPPED_BASES:
        raise errors.UserError(f"base image '{name}' (--base or FTLAUNCH_BASE_IMAGE): {DROPPED_BASES[name]}, and "
                               "the job's locked requirements need Python >= 3.11 with torch >= 2.5.",
                               hint="use --base pytorch (the default: every cloud runs it) or --base sagemaker, "
                                    "or name an image with Python >= 3.11 and torch >= 2.5")
    return BASE_IMAGES.get(name, name)


# ---------------------------------------------------------------------------- Dockerfile and context

def dockerfile(options: BuildOptions) -> str:
    from ftlaunch import templates

    return templates.render("Dockerfile.j2", base_image=options.base_image, ca_bundle=bool(options.ca_bundle))


def lock_text() -> str:
    return resources.files(__package__).joinpath(LOCK_FILE).read_text(encoding="utf-8")


def context_files(options: BuildOptions) -> dict[str, Path | bytes]:
    """Every file of the build context: its path in the context -> a file to copy or the bytes to write."""
    sources = trainer_sources()
    files: dict[str, Path | bytes] = {
        "Dockerfile": dockerfile(options).encode(),
        LOCK_FILE: lock_text().encode(),
        BASE_CHECK: sources[f"containers/{BASE_CHECK}"],
    }
    for rel, path in sources.items():
        files[f"ftlaunch/{rel}"] = path
    if options.ca_bundle:
        files["ca.crt"] = Path(options.ca_bundle)
    return files


def trainer_sources() -> dict[str, Path]:
    """The .py files of the shipped ftlaunch packages, keyed by their path inside the `ftlaunch` package.
    Works for an editable install (launcher/, containers/ apart) and a wheel (all under ftlaunch/)."""
    subpackages = {name: _package_dir(name) for name in
                   ("ftlaunch.backends", "ftlaunch.containers", "ftlaunch.templates")}
    out: dict[str, Path] = {}
    for name in SHIPPED_PACKAGES:
        root = _package_dir(name)
        prefix = name.split(".", 1)[1] + "/" if "." in name else ""
        others = [d for n, d in subpackages.items() if n != name and d != root]
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts or any(d in path.parents for d in others):
                continue
            out[prefix + path.relative_to(root).as_posix()] = path
    return out


def content_tag(options: BuildOptions) -> str:
    """16 hex digits of sha256 over the build context: the Dockerfile (with its base image), requirements.lock,
    the sources, and a CA bundle if one is copied in. Where pip gets the pinned wheels from is not content."""
    digest = hashlib.sha256()
    for rel, source in sorted(context_files(options).items()):
        digest.update(rel.encode() + b"\0")
        if isinstance(source, bytes):
            digest.update(hashlib.sha256(source).digest())
        else:
            digest.update(hashlib.sha256(source.read_bytes()).digest())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def local_ref(options: BuildOptions, tag: str | None = None) -> str:
    return f"{options.repository}:{tag or content_tag(options)}"


def remote_ref(registry: str, options: BuildOptions, tag: str | None = None) -> str:
    """`registry` is a host with an optional path: 123.dkr.ecr.us-east-1.amazonaws.com, 127.0.0.1:5000/ml."""
    return f"{registry.rstrip('/')}/{local_ref(options, tag)}"


def for_cloud(registry: str, env: Mapping[str, str], *, image: str | None = None, tag: str | None = None) -> dict:
    """Plan time, for a cloud target: the image its request names, and what a launch must build for it.

    A prebuilt image is used as given and nothing is built: `image` (a full reference) or an explicit `tag`
    (FTLAUNCH_IMAGE_TAG) in `registry`. Otherwise the content tag of the build options in `env`, the same
    on every cloud: {"image": "<registry>/ftlaunch-trainer:<tag>", "image_tag": tag, "image_build":
    {build options, "tag": tag}}; "image_build" is None for a prebuilt image."""
    if image:
        return {"image": image, "image_tag": None, "image_build": None}
    if tag:
        return {"image": f"{registry.rstrip('/')}/{REPOSITORY}:{tag}", "image_tag": tag, "image_build": None}
    options = options_from_env(env)
    tag = content_tag(options)
    return {"image": remote_ref(registry, options, tag), "image_tag": tag,
            "image_build": {**options.to_json(), "tag": tag}}


def assemble(options: BuildOptions, dest: Path) -> Path:
    """Writes the build context into dest (created empty) and returns it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for rel, source in context_files(options).items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            shutil.copyfile(source, target)
    return dest


# ---------------------------------------------------------------------------- build only when needed

@dataclasses.dataclass
class Outcome:
    """What ensure() did: the reference to use, and whether it built, pulled or pushed anything."""

    ref: str
    tag: str
    built: bool = False
    pushed: bool = False
    pulled: bool = False
    found: str | None = None  # "local" or "registry" when the tag already existed there


def ensure(engine, options: BuildOptions, *, registry: str | None = None, need_local: bool = True,
           tag: str | None = None, on_line: Callable[[str], None] | None = None) -> Outcome:
    """Makes the image available: locally (need_local, for a run here) and/or in `registry` (for a cloud).

    Builds only when the content tag is in neither place; pushes only when the registry lacks it;
    pulls only when a local run needs what only the registry has."""
    tag = tag or content_tag(options)
    local = local_ref(options, tag)
    remote = remote_ref(registry, options, tag) if registry else None
    outcome = Outcome(ref=remote or local, tag=tag)
    has_local = engine.image_exists(local)
    if remote is not None and engine.remote_exists(remote):
        outcome.found = "registry"
        if need_local and not has_local:
            engine.pull(remote)
            engine.tag(remote, local)
            outcome.pulled = True
        if not need_local:
            return outcome
        outcome.ref = local
        return outcome
    if has_local:
        outcome.found = "local"
    else:
        build(engine, options, tag, on_line=on_line)
        outcome.built = True
    if remote is not None:
        engine.tag(local, remote)
        engine.push(remote, on_line=on_line)
        outcome.pushed = True
    if need_local:
        outcome.ref = local if remote is None else outcome.ref
    return outcome


def build(engine, options: BuildOptions, tag: str | None = None,
          on_line: Callable[[str], None] | None = None) -> str:
    """Assembles the context in a temporary folder and builds `repository:tag`; returns the reference."""
    tag = tag or content_tag(options)
    ref = local_ref(options, tag)
    with tempfile.TemporaryDirectory(prefix="ftlaunch-image-") as tmp, _wheel_source(options) as pip_args:
        context = assemble(options, Path(tmp) / "context")
        engine.build(context, ref, network=options.network, on_line=on_line, build_args=pip_args,
                     labels={"ftlaunch.content-tag": tag, "ftlaunch.base-image": options.base_image})
    return ref


@contextlib.contextmanager
def _wheel_source(options: BuildOptions) -> Iterator[dict[str, str]]:
    """pip's build arguments for the wheelhouse option. A folder is served over HTTP on 127.0.0.1 for the
    build's duration (no COPY, so the wheels add no layer), which needs the build on the host network."""
    if not options.wheelhouse:
        yield {}
        return
    if "://" in options.wheelhouse:
        yield _pip_args(options.wheelhouse)
        return
    if options.network != "host":
        raise errors.UserError(f"--wheelhouse {options.wheelhouse}: a wheel folder is served to the build on "
                               "127.0.0.1, which the build reaches only on the host network.",
                               hint="add --build-network host, or give the wheelhouse as an http(s) URL")
    with serve_folder(Path(options.wheelhouse)) as url:
        yield _pip_args(url)


def _pip_args(url: str) -> dict[str, str]:
    import urllib.parse

    return {"PIP_FIND_LINKS": url, "PIP_NO_INDEX": "1",
            "PIP_TRUSTED_HOST": urllib.parse.urlsplit(url).hostname or ""}


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """A read-only HTTP server for `folder` on 127.0.0.1 at a free port, in a thread; yields its URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    # the URL is a build argument, and a changed build argument defeats the layer cache from the first RUN
    # on: so the same folder gets the same port whenever that port is free
    preferred = 20000 + int(hashlib.sha256(str(folder.resolve()).encode()).hexdigest(), 16) % 20000
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", preferred), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------- the lock file

def lock_requirements(extras: tuple[str, ...] = JOB_EXTRAS, distribution: str = "ftlaunch") -> str:
    """requirements.lock text: every distribution that ftlaunch's core and `extras` need, pinned to the
    version installed here, with its whole dependency closure, except torch and what only torch needs."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = default_environment()
    roots = []
    for text in metadata.requires(distribution) or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras)):
            roots.append(req)
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset]] = set()
    stack = list(roots)
    while stack:
        req = stack.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen or name in FROM_BASE:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{req.name} is not installed here; install ftlaunch[{','.join(extras)}] first")
        pinned[name] = dist.version
        wanted_extras = {"", *req.extras}  # a dependency's own extras (fsspec[http]) bring theirs
        for text in dist.requires or []:
            child = Requirement(text)
            if child.marker is None or any(child.marker.evaluate({**env, "extra": e}) for e in wanted_extras):
                stack.append(child)
    lines = [f"# A job's requirements, pinned: ftlaunch's dependencies and its [{','.join(extras)}] extras with",
             "# their whole closure, as installed when generated. torch is not here: the base image brings",
             f"# it. Regenerate: python -m ftlaunch.containers.image lock  (Python {sys.version.split()[0]})"]
    lines += [f"{name}=={version}" for name, version in sorted(pinned.items())]
    return "\n".join(lines) + "\n"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, name
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else ""
    if command == "lock":
        path = Path(__file__).with_name(LOCK_FILE)
        path.write_text(lock_requirements())
        print(f"wrote {path}")
        return 0
    if command == "dockerfile":
        print(dockerfile(options_from_env(os.environ)), end="")
        return 0
    if command == "tag":
        print(local_ref(options_from_env(os.environ)))
        return 0
    print("usage: python -m ftlaunch.containers.image lock|dockerfile|tag", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
