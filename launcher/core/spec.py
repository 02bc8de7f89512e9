"""The fine-tuning spec: what to train, on what data, with which technique and resources.

`load(path, overrides)` reads YAML, applies `--set a.b=c` overrides and validates; every mistake
becomes one `errors.Problem` naming the file, line and field, with a did-you-mean for unknown keys.
The reader is strict and bounded, so no input can hang it or exhaust memory: a regular UTF-8 file of at
most MAX_SPEC_BYTES, no duplicate keys, nesting and alias expansion capped (MAX_DEPTH, MAX_NODES), and
every number, duration and path range-checked, so nothing computed from the spec later overflows.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from ftlaunch import backends
from ftlaunch.core import errors, models
from ftlaunch.core import gpus as gpu_catalog
from ftlaunch.core.techniques import Task, Technique, format_unsuited, unsupported_reason

DEFAULT_SPEC = "ftlaunch.yaml"
CLOUDS = backends.NAMES  # the registry's backends, in order
# resources.cloud: a backend from the registry, or auto (a Literal built from it, so the JSON Schema lists the
# values and a wrong one is refused with every allowed value named)
CloudName = Literal[(*CLOUDS, "auto")]

# bounds of the reader: a real spec is a few kB, nests 5 deep and has a few hundred nodes
MAX_SPEC_BYTES = 1_000_000
MAX_DEPTH = 32  # nested mappings and lists, counted after alias expansion
MAX_NODES = 100_000  # YAML nodes after alias expansion (a "billion laughs" chain stops here)
MAX_NUMBER_CHARS = 100  # a YAML number written with more characters than this is refused unread
MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
MAX_NAME_BYTES = 255  # NAME_MAX: one path component
MAX_RUNTIME_S = 366 * 86400  # a year; the clouds cap jobs far below this
BIG = 1_000_000_000  # upper bound of step and row counts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False, validate_assignment=True, allow_inf_nan=False)


def _path_text(value: str) -> str:
    """A path or URI a spec names: no NUL or control characters, components and length the OS accepts."""
    if any(ord(c) < 32 for c in value):
        raise ValueError("a path cannot hold NUL or control characters (newline, tab, ...)")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise ValueError(f"the path is longer than {MAX_PATH_BYTES} bytes")
    if "://" not in value:
        long = next((part for part in value.split("/") if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES), None)
        if long is not None:
            raise ValueError(f"a path component is longer than {MAX_NAME_BYTES} bytes ('{long[:20]}...')")
    return value


PathText = Annotated[str, pydantic.AfterValidator(_path_text)]


# ---------------------------------------------------------------- technique settings

class FullArgs(_Strict):
    """`technique: full` has nothing to set."""


class LoraArgs(_Strict):
    r: int = Field(16, ge=1, le=65536, description="rank of the update matrices")
    alpha: int = Field(32, ge=1, le=BIG, description="scaling numerator; the update is scaled by alpha / r")
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
    encoder_hidden_size: int = Field(128, ge=1, le=65536)
    encoder_reparameterization_type: Literal["MLP", "LSTM"] = "MLP"


class AdapterArgs(_Strict):
    reduction_factor: int = Field(16, ge=1, le=65536, description="hidden size / bottleneck size")
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
    beta: float = Field(0.1, gt=0, le=1e6, description="strength of the pull towards the starting model")
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero",
                       "apo_down", "exo_pair", "discopop", "sft"] = "sigmoid"


class RlArgs(_Strict):
    reward_model: PathText | None = Field(None, description="folder of a reward model trained with task: reward")
    reward_function: str | None = Field(None, description="python reward function, 'module:function'")
    algorithm: Literal["grpo", "rloo"] = Field("grpo", description="GRPO or RLOO (trl)")
    num_generations: int = Field(4, ge=2, le=1024, description="completions per prompt; batch_size must be a multiple")
    max_completion_length: int = Field(64, ge=1, le=1_048_576)
    beta: float = Field(0.0, ge=0, le=1e6, description="KL penalty against the starting model (0: none)")
    temperature: float = Field(1.0, gt=0, le=100, description="sampling temperature of the completions")

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
    path: PathText = Field(description="local file or folder, hub name, s3://, gs://, az:// or azureml:// URI")
    format: DatasetFormat = "auto"
    columns: dict[str, str] = Field(default_factory=dict,
                                    description="canonical name -> column in the data, e.g. {output: response}")
    split: str = "train"
    eval_path: PathText | None = None
    eval_split: Union[float, str] = Field(0.1, description="fraction held out for evaluation, or a split name")
    max_samples: int | None = Field(None, ge=1, le=BIG)

    @pydantic.field_validator("eval_split")
    @classmethod
    def _fraction(cls, v: float | str) -> float | str:
        if isinstance(v, float) and not 0 <= v < 1:
            raise ValueError("a fraction must be at least 0 and below 1")
        return v


class Hyperparameters(_Strict):
    epochs: float = Field(1.0, gt=0, le=1e6)
    max_steps: int | None = Field(None, ge=1, le=BIG, description="stop after this many optimizer steps (overrides epochs)")
    learning_rate: float | None = Field(None, gt=0, le=10, description="default: per technique (2e-4 LoRA, 2e-5 full, ...)")
    batch_size: int = Field(8, ge=1, le=65536, description="micro-batch per device")
    grad_accum: int = Field(1, ge=1, le=65536)
    max_length: int = Field(512, ge=8, le=10_485_760)
    seed: int = Field(42, ge=0, le=2**32 - 1, description="numpy accepts seeds below 2**32")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, le=100)
    lr_scheduler: Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                          "inverse_sqrt"] = Field("cosine", description="transformers' schedulers that need no extra settings")
    optimizer: Literal["adamw", "adamw_8bit", "sgd", "adafactor"] = "adamw"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    gradient_checkpointing: bool | None = Field(None, description="default: on for GPUs unless the technique cannot")
    logging_steps: int = Field(1, ge=1, le=BIG)
    eval_steps: int | None = Field(None, ge=1, le=BIG)
    save_steps: int | None = Field(None, ge=1, le=BIG)
    save_minutes: float | None = Field(None, gt=0, le=MAX_RUNTIME_S / 60)


def parse_duration(value: Union[int, float, str]) -> int:
    """'90m', '2h', '1h30m', '45s' or a number of seconds -> seconds, from 1 second to MAX_RUNTIME_S."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = re.findall(r"([0-9]{1,20}(?:\.[0-9]{1,9})?)([dhms])", text)
        if re.fullmatch(r"[0-9]{1,20}", text):
            seconds = float(text)
        elif parts and "".join(n + u for n, u in parts) == text:
            scale = {"d": 86400, "h": 3600, "m": 60, "s": 1}
            seconds = sum(float(n) * scale[u] for n, u in parts)
        else:
            raise ValueError("use a duration such as '45m', '2h', '1h30m' or a number of seconds")
    if not 1 <= seconds <= MAX_RUNTIME_S:  # also false for NaN
        raise ValueError(f"a duration must be from 1 second to {MAX_RUNTIME_S // 86400} days")
    return int(seconds)


class Resources(_Strict):
    cloud: CloudName = Field(
        "local", description="where to run; auto: the cheapest offer that fits on any cloud target")
    clouds: list[Literal[tuple(n for n in CLOUDS if n != "local")]] | None = Field(  # type: ignore[misc]
        None, min_length=1, description="with cloud: auto, only these clouds are planned (and failed over to); "
                                        "`--cloud sagemaker,vertex` sets both")
    optimize: Literal["cost", "time"] = Field("cost", description="with several offers: cheapest or fastest")
    gpu: str | None = Field(None, max_length=64, description="GPU type, e.g. a100, h100, l4; 'a100:8' also sets gpus")
    gpus: int = Field(1, ge=0, le=64, description="GPUs per node")
    nodes: int = Field(1, ge=1, le=1024)
    spot: bool = False
    region: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$", description="e.g. us-east-1, us-central1, eastus")
    max_cost: float | None = Field(None, gt=0, le=10_000_000, description="USD; becomes the job's maximum runtime")
    max_runtime: Union[int, str, None] = Field(None, description="seconds, or '2h', '90m'")
    runtime: Literal["auto", "docker", "process"] = Field(
        "auto", description="local only: run in Docker when an engine answers, else as a process")
    distributed: Literal["auto", "ddp", "fsdp", "deepspeed"] = "auto"

    @pydantic.field_validator("max_runtime")
    @classmethod
    def _duration(cls, v: Union[int, str, None]) -> int | None:
        return None if v is None else parse_duration(v)

    @pydantic.model_validator(mode="after")
    def _clouds_with_auto(self) -> "Resources":
        if self.clouds and self.cloud != "auto":
            raise ValueError(f"clouds lists the clouds `cloud: auto` chooses among; with cloud: {self.cloud} drop "
                             "clouds, or set cloud: auto")
        return self

    @pydantic.model_validator(mode="after")
    def _gpu_count(self) -> "Resources":
        if self.gpu and ":" in self.gpu:
            name, _, count = self.gpu.partition(":")
            if not re.fullmatch(r"[0-9]{1,3}", count) or not 1 <= int(count) <= 64:
                raise ValueError(f"gpu '{self.gpu}': the count after ':' must be a whole number from 1 to 64")
            object.__setattr__(self, "gpu", name)
            object.__setattr__(self, "gpus", int(count))
            self.model_fields_set.add("gpus")  # 'a100:1' states the count: the planner keeps it (plan.gpus_explicit)
        return self


class Output(_Strict):
    path: PathText | None = Field(None, description="where results go (folder or bucket URI); default: per backend")
    merge: bool = Field(False, description="also write merged full weights (LoRA family)")


class Tracking(_Strict):
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)
    project: str | None = None


class Notify(_Strict):
    """What to run when the launcher sees a job change state (`ftlaunch status`, `ls`, a followed launch,
    `resume`): a command (argv, no shell) gets the job's id, state, reason and cost as FTLAUNCH_NOTIFY_*
    environment variables; a URL gets them as a JSON POST. A failure to notify is a warning."""

    command: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = Field(
        None, min_length=1, max_length=256, description="argv run on each state change, e.g. [notify-send, ftlaunch]")
    url: str | None = Field(None, max_length=2048, description="https:// URL that gets a JSON POST on each state "
                                                                "change (http:// only for localhost)")
    url_from: str | None = Field(None, description="name of the environment variable that holds the URL (a "
                                                   "webhook URL with a token is a secret: never write it here)")

    @pydantic.field_validator("command")
    @classmethod
    def _argv(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(any(ord(c) < 32 for c in arg) for arg in v):
            raise ValueError("an argument holds a control character (newline, tab, ...); give each argument as "
                             "its own list item")
        return v

    @pydantic.field_validator("url")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        local = parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1")
        if not parts.hostname or not (parts.scheme == "https" or local):
            raise ValueError("not an https:// URL (http:// is accepted only for localhost); write it as "
                             "https://host/path")
        return v

    @pydantic.field_validator("url_from")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError("not an environment variable name (it is not shown here in case it is a value); "
                             "write a name in capitals, such as FTLAUNCH_NOTIFY_URL")
        return v

    @pydantic.model_validator(mode="after")
    def _something(self) -> "Notify":
        if not (self.command or self.url or self.url_from):
            raise ValueError("notify needs `command: [...]`, `url: https://...` or `url_from: ENV_NAME`")
        if self.url and self.url_from:
            raise ValueError("give either `url` or `url_from`, not both")
        return self


class Bench(_Strict):
    """How `ftlaunch bench` varies this spec: which techniques, and settings per technique."""

    techniques: list[Technique] | None = Field(None, description="default: every technique the task supports")
    technique_args: dict[Technique, dict[str, Any]] = Field(
        default_factory=dict, description="technique -> its technique_args for the bench, e.g. {prompt: {num_virtual_tokens: 16}}")
    learning_rates: dict[Technique, Annotated[float, Field(gt=0, le=10)]] = Field(
        default_factory=dict, description="technique -> learning rate; default: each technique's own default")


_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# beginnings of well-known credential values (AWS key ids, Hugging Face, OpenAI, GitHub, Slack tokens)
_VALUE_PREFIXES = ("AKIA", "ASIA", "HF_", "SK-", "GHP_", "GITHUB_PAT_", "XOX")


class Spec(_Strict):
    """A fine-tuning job as the user describes it."""

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$",
                      description="lowercase letters, digits and dashes, at most 40 (cloud job names allow that)")
    model: PathText = Field(min_length=1, description="hub id, local folder, .gguf file, or pkg:<package>/<file>")
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
    notify: Notify | None = Field(None, description="a command or URL told of each state change the launcher sees")
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
        return str(candidate) if models.exists(candidate) or path.startswith(".") else path

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
        # a spec without notify or resources.clouds reads as it did before they existed (same digest, same job spec)
        exclude: dict[str, Any] = {"base_dir": True}
        if self.notify is None:
            exclude["notify"] = True
        if self.resources.clouds is None:
            exclude["resources"] = {"clouds"}
        return self.model_dump(mode="json", exclude=exclude)

    def digest(self) -> str:
        """A short, stable hash of what the job would do, from the spec as written: neither where the spec
        file lies nor where its relative paths resolve on this machine changes it."""
        if self._digest is not None:  # set by resolved(): the digest of the spec before its paths were resolved
            return self._digest
        what = {k: v for k, v in self.to_json().items() if k != "notify"}  # telling someone changes no result
        blob = json.dumps(what, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _is_local_ref(ref: str) -> bool:
    return models.looks_local(ref) or models.exists(ref)


def _absolute(path: str) -> str:
    """Absolute form of a local path; URIs, pkg: references and hub names pass through."""
    if "://" in path or path.startswith("pkg:"):
        return path
    p = models.local_path(path)
    return str(p.resolve()) if models.exists(p) or path.startswith((".", "/", "~")) else path


# ---------------------------------------------------------------- loading

def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Reads, overrides and validates a spec file; raises errors.UserError listing every problem."""
    path = Path(path)
    text = read_text(path)
    data, lines = parse_yaml(text, str(path))
    for item in overrides:
        apply_override(data, item, lines)
    data.setdefault("base_dir", str(path.resolve().parent))
    return validate(data, source=str(path), lines=lines, check_paths=True)


def loads(text: str, source: str = "<spec>", overrides: tuple[str, ...] = (), base_dir: str | None = None) -> Spec:
    data, lines = parse_yaml(text, source)
    for item in overrides:
        apply_override(data, item, lines)
    if base_dir:
        data.setdefault("base_dir", base_dir)
    return validate(data, source=source, lines=lines, check_paths=True)


def read_text(path: Path) -> str:
    """The text of a spec file: a regular, readable file of at most MAX_SPEC_BYTES of UTF-8.

    A FIFO, a device (/dev/zero), a folder or an unreadable file is refused before anything is read."""
    try:
        info = path.stat()
    except FileNotFoundError:
        hint = "run `ftlaunch init` to write a starter spec" if path.name == DEFAULT_SPEC else "check the path"
        raise errors.UserError(f"spec file {path} does not exist.", hint=hint) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name; OSError: name too long, ...
        raise errors.UserError(f"spec file {path!r} cannot be opened ({getattr(exc, 'strerror', None) or exc}).",
                               hint="check the path") from None
    if stat.S_ISDIR(info.st_mode):
        raise errors.UserError(f"spec file {path} is a folder.", hint=f"give the YAML file in it, e.g. {path / DEFAULT_SPEC}")
    if not stat.S_ISREG(info.st_mode):
        raise errors.UserError(f"spec file {path} is not a regular file (a FIFO, device or socket); it was not read.",
                               hint="save the spec as an ordinary YAML file and pass its path")
    if info.st_size > MAX_SPEC_BYTES:
        raise errors.UserError(f"spec file {path} is {info.st_size:,} bytes; a spec may be at most {MAX_SPEC_BYTES:,}.",
                               hint="keep training data in the files dataset.path names, not in the spec")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise errors.UserError(f"spec file {path} cannot be read ({exc.strerror or exc}).",
                               hint="check its permissions (chmod u+r) and that it is a file") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise errors.UserError(f"spec file {path} is over {MAX_SPEC_BYTES:,} bytes.",
                               hint="keep training data in the files dataset.path names, not in the spec")
    return decode(raw, str(path))


def decode(raw: bytes, source: str) -> str:
    """UTF-8 bytes (a BOM is allowed) -> text; anything else is an error naming the line, column and byte."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[:exc.start]
        line, column = before.count(b"\n") + 1, exc.start - (before.rfind(b"\n") + 1) + 1
        raise errors.UserError(f"{source}:{line}:{column}: the spec is not UTF-8 text (byte 0x{raw[exc.start]:02x}).",
                               hint="save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 old.yaml > spec.yaml") from None


def validate(data: dict[str, Any], source: str = "<spec>", lines: dict[tuple, int | str] | None = None,
             check_paths: bool = False) -> Spec:
    """Validates raw spec data; `check_paths` also checks that the local paths it names exist on this machine
    (the launcher's view: load and loads; a job's trainer, where paths are mapped, leaves it off)."""
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
    unsuited = format_unsuited(spec.dataset.format, spec.task)
    if unsuited:
        problems.append(errors.Problem(message=unsuited + ".", where=_where(source, _line_for(("dataset", "format"), lines)),
                                       field="dataset.format", hint="set dataset.format to one of those, or remove it"))
    problems += _check_places(spec, source, lines, check_paths)
    if problems:
        raise errors.UserError(f"{source}: the spec is not valid ({len(problems)} problem"
                               f"{'s' if len(problems) > 1 else ''}).", problems=problems)
    return spec


def _check_places(spec: Spec, source: str, lines: dict[tuple, int | str], check_paths: bool) -> list[errors.Problem]:
    """What the schema alone cannot see: the GPU is one the catalog knows, the model reference resolves, local
    paths exist, and output.path is a folder other than the filesystem root."""
    problems: list[errors.Problem] = []

    def problem(loc: tuple, message: str, hint: str | None) -> None:
        problems.append(errors.Problem(message=message, where=_where(source, _line_for(loc, lines)),
                                       field=".".join(loc), hint=hint))

    if spec.resources.gpu:
        try:
            gpu_catalog.get(spec.resources.gpu)
        except errors.UserError as exc:
            problem(("resources", "gpu"), exc.message, exc.hint)
    if not check_paths:
        return problems
    judge = spec.base_dir is not None  # without the spec's folder a relative path cannot be judged
    if not (models.looks_local(spec.model) and not judge and not spec.model.startswith(("/", "~"))):
        try:
            models.locate(spec.model, base_dir=spec.base_dir)
        except errors.UserError as exc:
            problem(("model",), exc.message, exc.hint)
    for loc, value in ((("dataset", "path"), spec.dataset.path), (("dataset", "eval_path"), spec.dataset.eval_path),
                       (("output", "path"), spec.output.path)):
        if not value or "://" in value:
            continue
        local = models.local_path(spec.resolve_path(value))
        if not local.is_absolute() and not (judge and models.looks_local(value)):
            continue  # a hub name, or a relative path with no spec folder to resolve it against
        shown = _show_text(value)
        if local.resolve() == Path(local.resolve().anchor):
            problem(loc, f"'{shown}' is the filesystem root.", "name a folder of its own")
        elif loc[0] == "output":
            if models.exists(local) and not local.is_dir():
                problem(loc, f"'{shown}' is a file; output.path must be a folder.",
                        "name a folder (it is created if missing), or remove the file")
        elif not models.exists(local):
            problem(loc, f"the local path '{shown}' does not exist ({_show_text(str(local))}).",
                    "fix the path (a relative path is relative to the spec file's folder), or give a hub "
                    "dataset name such as 'org/name' or a URI such as s3://bucket/key")
    return problems


def parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[tuple, int | str]]:
    """YAML -> (data, {key path: line number}); a syntax error names its line and column.

    Bounded: nesting deeper than MAX_DEPTH, more than MAX_NODES nodes once aliases are expanded, an alias
    that contains itself, a duplicate key or an over-long number is refused before any value is built."""
    if len(text) > MAX_SPEC_BYTES:
        raise errors.UserError(f"{source}: the spec is over {MAX_SPEC_BYTES:,} characters.",
                               hint="keep training data in the files dataset.path names, not in the spec")
    node, data = _parse(text, source)
    if data is None:
        raise errors.UserError(f"{source}: the spec is empty.", hint="run `ftlaunch init` for a starter spec")
    if not isinstance(data, dict):
        raise errors.UserError(f"{source}: a spec must be a mapping of keys (name:, model:, ...), "
                               f"not a {type(data).__name__}.", hint="run `ftlaunch init` for a starter spec")
    lines: dict[tuple, int | str] = {}
    repeated: list[errors.Problem] = []
    _walk(node, (), lines, repeated, set(), source)
    if repeated:
        raise errors.UserError(f"{source}: the spec repeats a key.", problems=repeated)
    return data, lines


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with numbers bounded and a value it cannot build reported at its line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, TypeError) as exc:
            raise yaml.constructor.ConstructorError(None, None, f"cannot read this value ({exc})",
                                                    node.start_mark) from None

    def construct_yaml_int(self, node: yaml.Node) -> int:
        self._short_number(node)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.Node) -> float:
        self._short_number(node)
        return super().construct_yaml_float(node)

    @staticmethod
    def _short_number(node: yaml.Node) -> None:
        if len(node.value) > MAX_NUMBER_CHARS:
            raise yaml.constructor.ConstructorError(
                None, None, f"a number written with {len(node.value)} characters (at most {MAX_NUMBER_CHARS})",
                node.start_mark)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)


def _parse(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """Checks nesting on the event stream (no recursion), composes the node graph, checks it, builds the data."""
    try:
        _check_events(text, source)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, None
            _check_graph(node, source)
            return node, loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, source, text) from None


class _SyntaxError(errors.UserError):
    """YAML that does not parse (a --set value that does not parse is taken as a plain string)."""


def _syntax_error(exc: yaml.YAMLError, source: str, text: str) -> errors.UserError:
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    problem = getattr(exc, "problem", None) or str(exc)
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[:exc.position]
        where = f"{source}:{before.count(chr(10)) + 1}:{exc.position - (before.rfind(chr(10)) + 1) + 1}"
        problem = f"a control character (U+{exc.character:04X}) is not allowed" if isinstance(exc.character, int) \
            else "a character that YAML does not allow"
    return _SyntaxError(f"{where}: YAML syntax error: {problem}.",
                        hint="check indentation and quoting on that line (values with ':' or '#' need quotes)")


def _check_events(text: str, source: str) -> None:
    depth = 0
    for count, event in enumerate(yaml.parse(text, Loader=yaml.SafeLoader)):
        if count > MAX_NODES:
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise errors.UserError(f"{source}:{line}: the spec holds over {MAX_NODES:,} values.",
                                   hint="keep training data in the files dataset.path names, not in the spec")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise errors.UserError(f"{source}:{line}: the spec nests deeper than {MAX_DEPTH} levels.",
                                       hint="a spec is a few levels of keys and lists; remove the extra brackets")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_graph(root: yaml.Node, source: str) -> None:
    """Counts nodes and depth as if every alias were copied out, without copying (each node is visited once);
    refuses an alias inside its own anchor and anything past the bounds."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            where = f"{source}:{node.start_mark.line + 1}"
            if size[key] > MAX_NODES:
                raise errors.UserError(f"{where}: the spec expands to over {MAX_NODES:,} values (aliases such as *name "
                                       f"copy what their anchor holds).", hint="use fewer or smaller aliases")
            if depth[key] > MAX_DEPTH + 1:
                raise errors.UserError(f"{where}: the spec nests deeper than {MAX_DEPTH} levels once aliases are "
                                       f"expanded.", hint="use fewer nested aliases")
            continue
        if key in size:
            continue
        if key in open_:
            raise errors.UserError(f"{source}:{node.start_mark.line + 1}: an alias refers to the anchor that contains "
                                   f"it, so the value would be infinite.", hint="remove the *alias inside its own &anchor")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _repeated_keys(node: yaml.MappingNode, path: tuple, source: str) -> list[errors.Problem]:
    """A Problem for each key that a mapping repeats (YAML would keep only the last), with both lines."""
    seen: dict[tuple[str, str], int] = {}
    problems = []
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        line = key.start_mark.line + 1
        first = seen.get((key.tag, key.value))
        if first is None:
            seen[(key.tag, key.value)] = line
        else:
            problems.append(errors.Problem(
                message=f"the key '{key.value}' appears twice in one mapping (lines {first} and {line}); "
                        f"YAML would silently keep only the last.",
                where=f"{source}:{line}", field=".".join(str(p) for p in path + (key.value,)),
                hint=f"keep one '{key.value}:' and delete the other"))
    return problems


def _walk(node: yaml.Node, path: tuple, out: dict[tuple, int | str], repeated: list[errors.Problem],
          checked: set[int], source: str) -> None:
    """Records the line of every key path (the graph is bounded by now) and each mapping's repeated keys."""
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        if id(node) not in checked:  # an aliased mapping is reported once, where it is first reached
            checked.add(id(node))
            repeated += _repeated_keys(node, path, source)
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            child = path + (key.value,)
            _walk(value, child, out, repeated, checked, source)
            out[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), out, repeated, checked, source)


def apply_override(data: dict[str, Any], item: str, lines: dict[tuple, int | str] | None = None) -> None:
    """Applies one `--set a.b=c` to the raw data; the value is parsed as YAML (so 3 is a number), with the
    spec file's bounds. `lines`, when given, records that the key came from --set (errors then say so)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise errors.UserError(f"--set {_show_text(item)}: expected KEY=VALUE, e.g. --set hyperparameters.max_steps=20.")
    source = f"--set {key.strip()}"
    try:
        value = _parse(raw, source)[1] if raw.strip() else ""
    except _SyntaxError:
        value = raw
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise errors.UserError(f"{source}: '{part}' is not a section, so '{key.strip()}' cannot be set.")
        node = child
    node[parts[-1]] = value
    if lines is not None:
        lines[tuple(parts)] = "--set"
        for path in [p for p in lines if p[:len(parts)] == tuple(parts) and len(p) > len(parts)]:
            del lines[path]


def _show_text(text: str) -> str:
    return text if len(text) < 80 else text[:77] + "..."


def _where(source: str, line: int | str | None) -> str:
    if isinstance(line, str):  # the value came from --set
        return line
    return f"{source}:{line}" if line else source


def _spec_error(exc: pydantic.ValidationError, source: str, lines: dict[tuple, int | str], model: type[BaseModel]) -> errors.UserError:
    problems = _problems(exc, source, lines, model)
    n = len(problems)
    return errors.UserError(f"{source}: the spec is not valid ({n} problem{'s' if n > 1 else ''}).", problems=problems)


def _problems(exc: pydantic.ValidationError, source: str, lines: dict[tuple, int | str], model: type[BaseModel],
              prefix: tuple = (), owner: str | None = None) -> list[errors.Problem]:
    problems = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        # union members add their type name to the location; keep only real keys (an unknown key is always
        # last, and kept even when it is spelled like a type name)
        last = len(loc) - 1 if err["type"] == "extra_forbidden" else len(loc)
        loc = tuple(p for i, p in enumerate(loc) if i == last or isinstance(p, int) or not _is_type_tag(p))
        field = ".".join(str(p) for p in loc) or None
        where = _where(source, _line_for(loc, lines))
        message, hint = _explain(err, loc, model, prefix, owner)
        problems.append(errors.Problem(message=message, where=where, field=field, hint=hint))
    return problems


def _is_type_tag(part: Any) -> bool:
    return isinstance(part, str) and part in {"list[str]", "literal['all-linear']", "int", "str", "float", "function-after[_duration(), union[int,str,none]]"} \
        or isinstance(part, str) and part.startswith(("literal[", "function-", "list[", "union[", "dict["))


def _line_for(loc: tuple, lines: dict[tuple, int | str]) -> int | str | None:
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
    if loc and (loc[0] == "secrets" or tuple(loc[:2]) in (("notify", "url"), ("notify", "url_from"))):
        # never echo what was written here: it may be a secret's value (a webhook URL carries a token)
        if kind == "value_error":
            return err["msg"].removeprefix("Value error, ") + ".", None
        return ("wants a list of secret names (the value is not shown in case it is a secret).",
                "list environment variable names, never values, e.g. secrets: [HF_TOKEN, WANDB_API_KEY]")
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
