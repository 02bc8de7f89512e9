"""The fine-tuning spec: what to train, on what data, with which technique and resources.

`load(path, overrides)` reads YAML, applies `--set a.b=c` overrides and validates; every mistake
becomes one `errors.Problem` naming the file, line and field, with a did-you-mean for unknown keys.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, Union

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from ftlaunch import errors
from ftlaunch.techniques import Task, Technique, unsupported_reason

DEFAULT_SPEC = "ftlaunch.yaml"
CLOUDS = ("local", "sagemaker", "vertex", "azureml", "skypilot")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False, validate_assignment=True)


# ---------------------------------------------------------------- technique settings

class FullArgs(_Strict):
    """`technique: full` has nothing to set."""


class LoraArgs(_Strict):
    r: int = Field(16, ge=1, description="rank of the update matrices")
    alpha: int = Field(32, ge=1, description="scaling numerator; the update is scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Union[list[str], Literal["all-linear"], None] = Field(
        None, description="module names to adapt; default: the attention and MLP projections of the model family")
    use_rslora: bool = False


class QloraArgs(LoraArgs):
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"


class IA3Args(_Strict):
    target_modules: Union[list[str], None] = None
    feedforward_modules: Union[list[str], None] = None


class PromptLearningArgs(_Strict):
    num_virtual_tokens: int = Field(20, ge=1, le=512)


class PromptArgs(PromptLearningArgs):
    init_text: str | None = Field(None, description="initialise the virtual tokens from this text")


class PtuningArgs(PromptLearningArgs):
    encoder_hidden_size: int = Field(128, ge=1)
    encoder_reparameterization_type: Literal["MLP", "LSTM"] = "MLP"


class AdapterArgs(_Strict):
    reduction_factor: int = Field(16, ge=1, description="hidden size / bottleneck size")
    nonlinearity: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)


TECHNIQUE_ARGS: dict[Technique, type[_Strict]] = {
    Technique.FULL: FullArgs,
    Technique.LORA: LoraArgs,
    Technique.DORA: LoraArgs,
    Technique.QLORA: QloraArgs,
    Technique.IA3: IA3Args,
    Technique.PREFIX: PromptLearningArgs,
    Technique.PROMPT: PromptArgs,
    Technique.PTUNING: PtuningArgs,
    Technique.ADAPTER: AdapterArgs,
}


# ---------------------------------------------------------------- task settings

class SftArgs(_Strict):
    chat_template: str | None = Field(None, description="chat template to use when the tokenizer has none: "
                                      "a name (chatml, zephyr) or Jinja text")
    packing: bool = Field(False, description="pack rows into padding-free batches (faster on mixed lengths)")
    sample_prompts: list[str] = Field(default_factory=list,
                                      description="prompts answered before and after training, saved in summary.json")


class CptArgs(_Strict):
    packing: bool = True


class ClassificationArgs(_Strict):
    labels: list[str] | None = Field(None, description="label names in id order; default: sorted distinct labels")


class RewardArgs(_Strict):
    pass


class DpoArgs(_Strict):
    beta: float = Field(0.1, gt=0, description="strength of the pull towards the starting model")
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero",
                       "apo_down", "exo_pair", "discopop", "sft"] = "sigmoid"


class RlArgs(_Strict):
    reward_model: str | None = Field(None, description="folder of a reward model trained with task: reward")
    reward_function: str | None = Field(None, description="python reward function, 'module:function'")
    algorithm: Literal["grpo", "rloo"] = Field("grpo", description="GRPO or RLOO (trl)")
    num_generations: int = Field(4, ge=2, description="completions per prompt; batch_size must be a multiple")
    max_completion_length: int = Field(64, ge=1)
    beta: float = Field(0.0, ge=0, description="KL penalty against the starting model (0: none)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the completions")

    @pydantic.model_validator(mode="after")
    def _one_reward(self) -> "RlArgs":
        if not self.reward_model and not self.reward_function:
            raise ValueError("task rl needs a reward: set reward_model (a task: reward output folder) "
                             "or reward_function ('module:function')")
        return self


TASK_ARGS: dict[Task, type[_Strict]] = {
    Task.SFT: SftArgs,
    Task.CPT: CptArgs,
    Task.CLASSIFICATION: ClassificationArgs,
    Task.REWARD: RewardArgs,
    Task.DPO: DpoArgs,
    Task.RL: RlArgs,
}


# ---------------------------------------------------------------- the spec

DatasetFormat = Literal["auto", "alpaca", "messages", "prompt_completion", "text", "classification", "preference"]


class Dataset(_Strict):
    path: str = Field(description="local file or folder, hub name, s3://, gs://, az:// or azureml:// URI")
    format: DatasetFormat = "auto"
    columns: dict[str, str] = Field(default_factory=dict,
                                    description="canonical name -> column in the data, e.g. {output: response}")
    split: str = "train"
    eval_path: str | None = None
    eval_split: Union[float, str] = Field(0.1, description="fraction held out for evaluation, or a split name")
    max_samples: int | None = Field(None, ge=1)

    @pydantic.field_validator("eval_split")
    @classmethod
    def _fraction(cls, v: float | str) -> float | str:
        if isinstance(v, float) and not 0 <= v < 1:
            raise ValueError("a fraction must be at least 0 and below 1")
        return v


class Hyperparameters(_Strict):
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    learning_rate: float | None = Field(None, gt=0, description="default: per technique (2e-4 LoRA, 2e-5 full, ...)")
    batch_size: int = Field(8, ge=1, description="micro-batch per device")
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(512, ge=8)
    seed: int = 42
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: str = "cosine"
    optimizer: Literal["adamw", "adamw_8bit", "sgd", "adafactor"] = "adamw"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    gradient_checkpointing: bool | None = Field(None, description="default: on for GPUs unless the technique cannot")
    logging_steps: int = Field(1, ge=1)
    eval_steps: int | None = Field(None, ge=1)
    save_steps: int | None = Field(None, ge=1)
    save_minutes: float | None = Field(None, gt=0)


def parse_duration(value: Union[int, float, str]) -> int:
    """'90m', '2h', '1h30m', '45s' or a number of seconds -> seconds."""
    if isinstance(value, (int, float)):
        return int(value)
    text = value.strip().lower().replace(" ", "")
    if text.isdigit():
        return int(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError("use a duration such as '45m', '2h', '1h30m' or a number of seconds")
    scale = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return int(sum(float(n) * scale[u] for n, u in parts))


class Resources(_Strict):
    cloud: Literal["local", "sagemaker", "vertex", "azureml", "skypilot", "auto"] = Field(
        "local", description="where to run; auto: the cheapest offer that fits on any cloud target")
    optimize: Literal["cost", "time"] = Field("cost", description="with several offers: cheapest or fastest")
    gpu: str | None = Field(None, description="GPU type, e.g. a100, h100, l4; 'a100:8' also sets gpus")
    gpus: int = Field(1, ge=0, description="GPUs per node")
    nodes: int = Field(1, ge=1)
    spot: bool = False
    region: str | None = None
    max_cost: float | None = Field(None, gt=0, description="USD; becomes the job's maximum runtime")
    max_runtime: Union[int, str, None] = Field(None, description="seconds, or '2h', '90m'")
    runtime: Literal["auto", "docker", "process"] = Field(
        "auto", description="local only: run in Docker when an engine answers, else as a process")
    distributed: Literal["auto", "ddp", "fsdp", "deepspeed"] = "auto"

    @pydantic.field_validator("max_runtime")
    @classmethod
    def _duration(cls, v: Union[int, str, None]) -> int | None:
        return None if v is None else parse_duration(v)

    @pydantic.model_validator(mode="after")
    def _gpu_count(self) -> "Resources":
        if self.gpu and ":" in self.gpu:
            name, _, count = self.gpu.partition(":")
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"gpu '{self.gpu}': the count after ':' must be a positive whole number")
            object.__setattr__(self, "gpu", name)
            object.__setattr__(self, "gpus", int(count))
            self.model_fields_set.add("gpus")  # 'a100:1' states the count: the planner keeps it (plan.gpus_explicit)
        return self


class Output(_Strict):
    path: str | None = Field(None, description="where results go (folder or bucket URI); default: per backend")
    merge: bool = Field(False, description="also write merged full weights (LoRA family)")


class Tracking(_Strict):
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)
    project: str | None = None


class Bench(_Strict):
    """How `ftlaunch bench` varies this spec: which techniques, and settings per technique."""

    techniques: list[Technique] | None = Field(None, description="default: every technique the task supports")
    technique_args: dict[Technique, dict[str, Any]] = Field(
        default_factory=dict, description="technique -> its technique_args for the bench, e.g. {prompt: {num_virtual_tokens: 16}}")
    learning_rates: dict[Technique, float] = Field(
        default_factory=dict, description="technique -> learning rate; default: each technique's own default")


_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# beginnings of well-known credential values (AWS key ids, Hugging Face, OpenAI, GitHub, Slack tokens)
_VALUE_PREFIXES = ("AKIA", "ASIA", "HF_", "SK-", "GHP_", "GITHUB_PAT_", "XOX")


class Spec(_Strict):
    """A fine-tuning job as the user describes it."""

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$",
                      description="lowercase letters, digits and dashes, at most 40 (cloud job names allow that)")
    model: str = Field(description="hub id, local folder, .gguf file, or pkg:<package>/<file>")
    technique: Technique = Technique.LORA
    technique_args: dict[str, Any] = Field(default_factory=dict)
    task: Task = Task.SFT
    task_args: dict[str, Any] = Field(default_factory=dict)
    dataset: Dataset
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    resources: Resources = Field(default_factory=Resources)
    output: Output = Field(default_factory=Output)
    tracking: Tracking = Field(default_factory=Tracking)
    secrets: list[str] = Field(default_factory=list,
                               description="names of secrets (environment variables) the job may read; never values")
    bench: Bench = Field(default_factory=Bench, description="used only by `ftlaunch bench`")
    _digest: str | None = pydantic.PrivateAttr(None)
    base_dir: str | None = Field(None, description="set by the loader: the spec file's folder, for relative paths")

    @pydantic.field_validator("secrets")
    @classmethod
    def _secret_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _ENV_NAME.match(name) or name.upper().startswith(_VALUE_PREFIXES) and len(name) > 16:
                raise ValueError("an entry is not a secret name (it is not shown here in case it is a value); "
                                 "list environment variable names in capitals, such as HF_TOKEN, never values")
        return v

    @pydantic.field_validator("task")
    @classmethod
    def _pairing(cls, task: Task, info: pydantic.ValidationInfo) -> Task:
        technique = info.data.get("technique")
        reason = technique and unsupported_reason(technique, task)
        if reason:
            raise ValueError(f"technique '{technique.value}' does not support task '{task.value}': {reason}")
        return task

    # typed views of the free-form sections (validated by `load`)
    @property
    def technique_settings(self) -> Any:
        return TECHNIQUE_ARGS[self.technique].model_validate(self.technique_args)

    @property
    def task_settings(self) -> Any:
        return TASK_ARGS[self.task].model_validate(self.task_args)

    def resolve_path(self, path: str) -> str:
        """A relative local path in the spec is relative to the spec file's folder; URIs and hub names pass through."""
        if "://" in path or path.startswith(("pkg:", "/", "~")) or self.base_dir is None:
            return path
        candidate = Path(self.base_dir) / path
        return str(candidate) if candidate.exists() or path.startswith(".") else path

    def resolved(self) -> "Spec":
        """A copy whose local paths (model, dataset, output) are absolute, so a job does not depend on its cwd."""
        data = self.to_json()
        data["model"] = _absolute(self.resolve_path(self.model)) if _is_local_ref(self.model) else self.model
        data["dataset"]["path"] = _absolute(self.resolve_path(self.dataset.path))
        if self.dataset.eval_path:
            data["dataset"]["eval_path"] = _absolute(self.resolve_path(self.dataset.eval_path))
        if self.output.path:
            data["output"]["path"] = _absolute(self.resolve_path(self.output.path))
        copy = Spec.model_validate(data)
        copy._digest = self.digest()  # the job's identity stays that of the spec as written
        return copy

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"base_dir"})

    def digest(self) -> str:
        """A short, stable hash of what the job would do, from the spec as written: neither where the spec
        file lies nor where its relative paths resolve on this machine changes it."""
        if self._digest is not None:  # set by resolved(): the digest of the spec before its paths were resolved
            return self._digest
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _is_local_ref(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or Path(ref).exists()


def _absolute(path: str) -> str:
    """Absolute form of a local path; URIs, pkg: references and hub names pass through."""
    if "://" in path or path.startswith("pkg:"):
        return path
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() or path.startswith((".", "/", "~")) else path


# ---------------------------------------------------------------- loading

def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Reads, overrides and validates a spec file; raises errors.UserError listing every problem."""
    path = Path(path)
    if not path.exists():
        hint = "run `ftlaunch init` to write a starter spec" if path.name == DEFAULT_SPEC else \
            "check the path"
        raise errors.UserError(f"spec file {path} does not exist.", hint=hint)
    text = path.read_text(encoding="utf-8")
    data, lines = parse_yaml(text, str(path))
    for item in overrides:
        apply_override(data, item)
    data.setdefault("base_dir", str(path.resolve().parent))
    return validate(data, source=str(path), lines=lines)


def loads(text: str, source: str = "<spec>", overrides: tuple[str, ...] = (), base_dir: str | None = None) -> Spec:
    data, lines = parse_yaml(text, source)
    for item in overrides:
        apply_override(data, item)
    if base_dir:
        data.setdefault("base_dir", base_dir)
    return validate(data, source=source, lines=lines)


def validate(data: dict[str, Any], source: str = "<spec>", lines: dict[tuple, int] | None = None) -> Spec:
    lines = lines or {}
    try:
        spec = Spec.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _spec_error(exc, source, lines, Spec) from None
    problems: list[errors.Problem] = []
    for section, table, key in (("technique_args", TECHNIQUE_ARGS, spec.technique),
                                ("task_args", TASK_ARGS, spec.task)):
        model = table[key]
        try:
            model.model_validate(getattr(spec, section))
        except pydantic.ValidationError as exc:
            problems += _problems(exc, source, lines, model, prefix=(section,), owner=f"{key.value}")
    for technique, args in spec.bench.technique_args.items():
        model = TECHNIQUE_ARGS[technique]
        try:
            model.model_validate(args)
        except pydantic.ValidationError as exc:
            problems += _problems(exc, source, lines, model, prefix=("bench", "technique_args", technique.value),
                                  owner=technique.value)
    if problems:
        raise errors.UserError(f"{source}: the spec is not valid ({len(problems)} problem"
                               f"{'s' if len(problems) > 1 else ''}).", problems=problems)
    return spec


def parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[tuple, int]]:
    """YAML -> (data, {key path: line number}); a syntax error names its line and column."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise errors.UserError(f"{where}: YAML syntax error: {problem}.",
                               hint="check indentation and quoting on that line (values with ':' or '#' need quotes)") from None
    if data is None:
        raise errors.UserError(f"{source}: the spec is empty.", hint="run `ftlaunch init` for a starter spec")
    if not isinstance(data, dict):
        raise errors.UserError(f"{source}: a spec must be a mapping of keys (name:, model:, ...), "
                               f"not a {type(data).__name__}.", hint="run `ftlaunch init` for a starter spec")
    lines: dict[tuple, int] = {}
    _walk(node, (), lines)
    return data, lines


def _walk(node: yaml.Node, path: tuple, out: dict[tuple, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            _walk(value, child, out)
            out[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), out)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Applies one `--set a.b=c` to the raw data; the value is parsed as YAML (so 3 is a number)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise errors.UserError(f"--set {item}: expected KEY=VALUE, e.g. --set hyperparameters.max_steps=20.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise errors.UserError(f"--set {item}: '{part}' is not a section, so '{key}' cannot be set.")
        node = child
    node[parts[-1]] = value


def _spec_error(exc: pydantic.ValidationError, source: str, lines: dict[tuple, int], model: type[BaseModel]) -> errors.UserError:
    problems = _problems(exc, source, lines, model)
    n = len(problems)
    return errors.UserError(f"{source}: the spec is not valid ({n} problem{'s' if n > 1 else ''}).", problems=problems)


def _problems(exc: pydantic.ValidationError, source: str, lines: dict[tuple, int], model: type[BaseModel],
              prefix: tuple = (), owner: str | None = None) -> list[errors.Problem]:
    problems = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        # union members add their type name to the location; keep only real keys
        loc = tuple(p for p in loc if isinstance(p, int) or not _is_type_tag(p))
        field = ".".join(str(p) for p in loc) or None
        line = _line_for(loc, lines)
        where = f"{source}:{line}" if line else source
        message, hint = _explain(err, loc, model, prefix, owner)
        problems.append(errors.Problem(message=message, where=where, field=field, hint=hint))
    return problems


def _is_type_tag(part: str) -> bool:
    return part in {"list[str]", "literal['all-linear']", "int", "str", "float", "function-after[_duration(), union[int,str,none]]"} \
        or part.startswith(("literal[", "function-", "list[", "union[", "dict["))


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _explain(err: dict, loc: tuple, model: type[BaseModel], prefix: tuple, owner: str | None) -> tuple[str, str | None]:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = _fields_at(model, loc[len(prefix):-1])
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        where = f" for task '{owner}'" if prefix == ("task_args",) else \
            f" for technique '{owner}'" if prefix and "technique_args" in prefix else ""
        message = f"unknown key '{key}'{where}"
        if close:
            return message + f"; did you mean '{close[0]}'?", f"rename '{key}' to '{close[0]}'"
        return message + ".", (f"known keys here: {', '.join(sorted(known))}" if known else "remove it")
    if kind == "missing":
        return "is required but missing.", f"add '{loc[-1]}:' to the spec"
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {_show(value)})"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    hint = None
    if kind == "literal_error" or kind == "enum":
        expected = err.get("ctx", {}).get("expected")
        hint = f"use one of {expected}" if expected else None
    elif kind == "string_pattern_mismatch" and loc == ("name",):
        hint = "use lowercase letters, digits and dashes, e.g. 'smollm2-lora'"
    return f"{msg}{shown}.", hint


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def _fields_at(model: type[BaseModel], path: tuple) -> list[str]:
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}).keys())


def json_schema() -> dict[str, Any]:
    """The spec's JSON Schema, for editor completion (yaml-language-server)."""
    schema = Spec.model_json_schema()
    schema["properties"].pop("base_dir", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ftlaunch spec"
    return schema
