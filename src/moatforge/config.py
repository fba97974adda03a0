"""The one typed config every stage reads: YAML, then dotted ``key=value`` overrides, then validation.

Groups are named ``*Args`` so they never shadow Ray's ``ScalingConfig``/``RunConfig`` or peft's ``LoraConfig``.
Errors are reworded into one line naming the key, the problem and the valid choices, because a pydantic
error wall is what users hit most often and read least.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moatforge.errors import MoatforgeError


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunArgs(_Args):
    name: str = Field("moatforge-run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    storage_path: str = "./runs"


class ClusterArgs(_Args):
    address: str | None = None
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    torch_threads: int | None = Field(None, ge=1)


class ModelArgs(_Args):
    name_or_path: str = "smollm2-135m-instruct"
    chat_template: Literal["auto", "model", "hermes"] = "auto"


class DataArgs(_Args):
    train: str | None = None
    eval: str | None = None
    max_seq_len: int = Field(1024, ge=8)
    overlong: Literal["drop", "truncate"] = "drop"
    packing: bool = False
    shuffle: bool = True


class TrainArgs(_Args):
    zero_stage: int = Field(2, ge=0, le=3)
    offload: Literal["none", "optimizer", "optimizer+params"] = "none"
    max_steps: int | None = Field(None, ge=1)
    epochs: int = Field(1, ge=1)
    micro_batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    seed: int = 0
    checkpoint_every_steps: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(3, ge=0)
    gradient_checkpointing: bool = False
    eval_every_steps: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> TrainArgs:
        if self.offload != "none" and self.zero_stage == 0:
            raise ValueError("train.offload needs train.zero_stage >= 1 (offload moves ZeRO partitions)")
        if self.offload == "optimizer+params" and self.zero_stage != 3:
            raise ValueError("train.offload=optimizer+params needs train.zero_stage=3 (only ZeRO-3 partitions params)")
        return self


class LoraArgs(_Args):
    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


DEFAULT_CURATE_STEPS = ["normalize", "chat_validate", "quality", "exact_dedup", "near_dedup", "pii"]


class CurateArgs(_Args):
    """``steps`` is an ordered list of ``{name: STEP, ...its parameters}``; the curate stage validates each."""

    input: str | None = None
    output: str | None = None
    overwrite: bool = False
    steps: list[dict[str, Any]] = Field(default_factory=lambda: [{"name": n} for n in DEFAULT_CURATE_STEPS])


class DistillArgs(_Args):
    """``student`` is a model reference or ``prune:N`` (the teacher keeping N of its decoder layers)."""

    teacher: str | None = None
    student: str = "prune:12"
    prune_method: Literal["block", "greedy", "importance", "even"] = "block"
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    beta: float = Field(0.5, ge=0, le=1)
    temperature: float = Field(1.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)
    top_k: int = Field(32, ge=1)
    mode: Literal["offline", "online"] = "offline"
    teacher_batch_size: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _student_reference(self) -> DistillArgs:
        if self.student.startswith("prune:"):
            n = self.student.split(":", 1)[1]
            if not n.isdigit() or int(n) < 1:
                raise ValueError(f"distill.student={self.student!r}: prune:N needs a layer count N >= 1, e.g. prune:12")
        return self


DEFAULT_STUDENT = "runs/quickstart-student/final/model"


class ServeDeploymentArgs(_Args):
    """Scaling of one Serve deployment; the same knobs as a Serve YAML ``deployments:`` entry."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(16.0, gt=0)
    max_ongoing_requests: int = Field(32, ge=1)
    # -1 queues without bound; anything else answers 503 at once when the queue is full.
    max_queued_requests: int = Field(64, ge=-1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _replicas_order(self) -> ServeDeploymentArgs:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        if self.max_queued_requests == 0:
            raise ValueError("max_queued_requests must be -1 (no limit) or >= 1")
        return self


class ServeIngressArgs(ServeDeploymentArgs):
    """The HTTP front (auth, validation, tokenization): cheap per request, so it holds many at once."""

    target_ongoing_requests: float = Field(64.0, gt=0)
    max_ongoing_requests: int = Field(256, ge=1)
    max_queued_requests: int = Field(256, ge=-1)
    num_cpus: float = Field(0.5, ge=0)


class ServeEngineArgs(ServeDeploymentArgs):
    """The model replicas: ongoing requests beyond the batch size wait inside the replica for a batch slot."""

    target_ongoing_requests: float = Field(24.0, gt=0)
    max_ongoing_requests: int = Field(48, ge=1)
    max_queued_requests: int = Field(64, ge=-1)


class ServeArgs(_Args):
    """The OpenAI-compatible server: also the ``args:`` of ``moatforge.serve:build_app`` in a Serve YAML."""

    model: str = DEFAULT_STUDENT
    model_name: str | None = None  # the id clients send as "model"; defaults to ``model`` as given
    chat_template: Literal["auto", "model", "hermes"] = "auto"
    adapters: dict[str, str] = Field(default_factory=dict)  # LoRA adapter name -> peft directory
    max_adapters_per_replica: int = Field(4, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    route_prefix: str = "/"
    app_name: str = Field("moatforge", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    api_keys_file: str | None = None  # one key per line, in addition to $MOATFORGE_API_KEYS
    allow_unauthenticated: bool = False  # local development only: serve without any API key
    max_batch_size: int = Field(32, ge=1)
    # Keys and values of recent prompts kept per replica for reuse by prompts that start the same way (the
    # system prompt and tools an application repeats); 0 turns prefix caching off.
    prefix_cache_tokens: int = Field(8192, ge=0)
    default_max_tokens: int = Field(256, ge=1)
    max_context: int | None = Field(None, ge=16)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    torch_threads: int | None = Field(None, ge=1)
    request_timeout_s: float = Field(300.0, gt=0)
    # Replica cost metrics: USD/hour overrides of the price table (as cost.prices) and the price key of a GPU
    # replica's accelerator (detected from the device when unset).
    prices: dict[str, float] = Field(default_factory=dict)
    accelerator: str | None = None
    ingress: ServeIngressArgs = Field(default_factory=ServeIngressArgs)
    engine: ServeEngineArgs = Field(default_factory=ServeEngineArgs)


class CostArgs(_Args):
    """USD per hour by accelerator type (and ``cpu_core`` per core); given keys override the defaults."""

    prices: dict[str, float] = Field(default_factory=dict)
    accelerator: str | None = None  # price key to bill; detected from the device when unset
    budget_usd: float | None = Field(None, gt=0)
    cpu_peak_flops_per_core: float = Field(5e10, gt=0)  # MFU denominator on CPU (fp32 FMA, ~AVX2 at 3 GHz)

    @model_validator(mode="after")
    def _merge_default_prices(self) -> CostArgs:
        from moatforge.metrics import prices_with_defaults

        bad = [k for k, v in self.prices.items() if v < 0]
        if bad:
            raise ValueError(f"cost.prices.{bad[0]} is negative; prices are USD per hour, >= 0")
        merged = prices_with_defaults(self.prices)
        if merged != self.prices:
            object.__setattr__(self, "prices", merged)
        return self


class MoatforgeConfig(_Args):
    run: RunArgs = Field(default_factory=RunArgs)
    cluster: ClusterArgs = Field(default_factory=ClusterArgs)
    model: ModelArgs = Field(default_factory=ModelArgs)
    data: DataArgs = Field(default_factory=DataArgs)
    train: TrainArgs = Field(default_factory=TrainArgs)
    lora: LoraArgs = Field(default_factory=LoraArgs)
    curate: CurateArgs = Field(default_factory=CurateArgs)
    distill: DistillArgs = Field(default_factory=DistillArgs)
    cost: CostArgs = Field(default_factory=CostArgs)
    serve: ServeArgs = Field(default_factory=ServeArgs)

    def run_dir(self) -> str:
        return self.run.storage_path.rstrip("/") + "/" + self.run.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_valid_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def valid_keys() -> list[str]:
    return _valid_keys(MoatforgeConfig)


def _parse_value(text: str) -> Any:
    """Overrides are YAML scalars or flow collections, so `lora.target_modules=[q_proj,v_proj]` works."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        if "=" not in item:
            raise MoatforgeError(f"override {item!r} is not of the form key=value (e.g. train.lr=1e-4)")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise MoatforgeError(f"override {item!r}: {part!r} is a value, not a group")
            node = child
        node[parts[-1]] = _parse_value(raw)
    return data


def _format_error(err: dict, source: str) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    if err["type"] == "extra_forbidden":
        group = ".".join(str(p) for p in err["loc"][:-1])
        keys = [k for k in valid_keys() if k.startswith(group + ".")] if group else valid_keys()
        names = sorted({k[len(group) + 1 :].split(".")[0] if group else k.split(".")[0] for k in keys})
        close = difflib.get_close_matches(str(err["loc"][-1]), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = f"group {group!r}" if group else "the top level"
        return f"{source}: unknown key {loc!r}{hint}; valid keys in {where}: {', '.join(names)}"
    got = err.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: {loc or 'config'}: {err['msg']}{got_text}"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> MoatforgeConfig:
    """Read YAML (optional), apply overrides, validate; every failure is one MoatforgeError line."""
    data: dict = {}
    source = "config"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise MoatforgeError(f"config file {source} does not exist (pass --config PATH to a YAML file)")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise MoatforgeError(f"{source}: invalid YAML{where}: {problem}") from None
        except OSError as exc:
            raise MoatforgeError(f"{source}: cannot read config file: {exc.strerror}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise MoatforgeError(f"{source}: the top level must be a mapping of groups (run:, model:, ...)")
        data = loaded
    if overrides:
        source = f"{source} + overrides" if path is not None else "overrides"
        data = apply_overrides(data, overrides)
    try:
        return MoatforgeConfig.model_validate(data)
    except ValidationError as exc:
        raise MoatforgeError(_format_error(exc.errors()[0], source)) from None
