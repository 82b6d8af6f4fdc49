"""The training configuration: one typed, validated source of truth, saved beside every result."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from fpt.errors import FPTError

# Fields that decide where and how fast a run computes, not what: left out of sweep run ids, and a run may resume
# with other values of them.
PLACEMENT_FIELDS = ("threads", "device")


class TrainConfig(BaseModel):
    """Everything that decides a training run's numbers. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    task: str = Field("bit-xor", description="task name (fpt list tasks), e.g. bit-xor, digits, ucr:GunPoint")
    task_args: dict[str, Any] = Field(
        default_factory=dict, description="task parameters as YAML/JSON, e.g. '{n_bits: 5}'"
    )
    model: str = Field("fpt", description="model: fpt, or a baseline (fpt list models)")
    backbone: str = Field("minilm", description="backbone name (fpt list backbones)")
    backbone_path: str | None = Field(None, description="local folder or cached hub id for hub backbones")
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="backbone weights: pretrained or the family's fresh random init"
    )
    train: str = Field(
        "input,output,layernorm,positional",
        description="comma list of parameter groups to train, or 'all' (full fine-tuning); groups: "
        "input, output, attention, feedforward, layernorm, positional, embedding",
    )
    input_init: Literal["paper", "matched"] = Field(
        "matched",
        description="input layer init: matched (zero bias, "
        "weight at token-embedding norm) or paper (orthogonal, gain 1.41)",
    )
    readout: Literal["last", "mean"] | None = Field(None, description="readout; default: the task's")
    bos: bool | None = Field(
        None,
        description="start every sequence with the backbone's BOS token embedding, as in its pretraining (decoder "
        "backbones); default: the family's (on for llama/smollm2, off elsewhere)",
    )
    layers: int | None = Field(
        None,
        ge=0,
        description="keep the backbone's first N transformer blocks, drop the rest (0: none, the input layer reaches "
        "the head through the embeddings' positions and norm alone); default: all",
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="backbone dropout probability")
    optimizer: Literal["adam", "adamw"] = Field("adam", description="optimizer")
    lr: float = Field(1e-3, gt=0.0, description="learning rate")
    weight_decay: float = Field(0.0, ge=0.0, description="weight decay (matrices of trained groups only)")
    batch_size: int = Field(32, gt=0, description="training batch size")
    steps: int | None = Field(None, gt=0, description="training steps; default: the task's budget")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    schedule: Literal["constant", "cosine"] = Field("constant", description="learning-rate schedule after warm-up")
    clip: float | None = Field(1.0, gt=0.0, description="gradient-norm clip; null disables")
    eval_every: int | None = Field(None, gt=0, description="validate every N steps; default: the task's")
    eval_batch_size: int = Field(256, gt=0, description="evaluation batch size")
    patience: int | None = Field(
        5, gt=0, description="stop after N validations without a better val accuracy; null: never"
    )
    seed: int = Field(0, ge=0, description="seed for initialisation, data order and dropout")
    threads: int | None = Field(None, gt=0, description="CPU threads for torch; default: torch's choice")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="fp32, or bf16 autocast (mixed precision; weights and optimizer state stay fp32)"
    )
    compile: bool = Field(False, description="torch.compile the model (pays off on GPUs; slower on CPU in fpt bench)")
    width: int | None = Field(
        None,
        gt=0,
        description="hidden width of the lstm, mlp and random-features baselines; default: the backbone's hidden size",
    )
    lstm_layers: int = Field(3, gt=0, description="layers of the lstm baseline (the paper's: 3)")
    mlp_layers: int = Field(2, gt=0, description="hidden layers of the mlp baseline")
    cache_features: bool = Field(
        False,
        description="the paper's reservoir: with --train output, compute the frozen features once per example and "
        "train only the head on them",
    )
    method: str = Field(
        "fpt",
        description="which weights of the frozen backbone train besides the input layer and head (fpt list methods): "
        "fpt (--train's groups), lora, ia3, ln-tuning, bitfit, prompt; a method's own tensors are the group "
        "'adapter', and --train defaults to input,output beside them",
    )
    lora_rank: int = Field(8, gt=0, description="LoRA: rank of the low-rank update")
    lora_alpha: float = Field(8.0, gt=0.0, description="LoRA: scale numerator (the update is B·A·alpha/rank)")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA: dropout on the update's input")
    prompt_tokens: int = Field(16, gt=0, description="prompt: trained virtual tokens before the inputs")
    targets: str | None = Field(
        None,
        description="lora, ia3, ln-tuning: comma list of the backbone modules the method adapts (peft's "
        "target_modules: names or dotted suffixes); default: peft's for the architecture (ln-tuning: the norms)",
    )
    unfreeze: str | None = Field(
        None,
        description="gradual unfreezing: comma list of GROUP@STEP or GROUP/LAYER@STEP (LAYER from 0, or negative "
        "from the top), e.g. 'attention/-1@200,feedforward/-1@200,attention/-2@400'; each trains after STEP steps, "
        "and its group is among train's",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """`--steps true` is a mistake, not 1: a bool is refused where a number (not a switch) is expected."""
        kinds = members(cls.model_fields[str(info.field_name)].annotation)
        if isinstance(value, bool) and bool not in kinds and (int in kinds or float in kinds):
            raise ValueError("expected a number, not a true/false value")
        return value

    @field_validator("train")
    @classmethod
    def _groups(cls, value: str) -> str:
        from fpt.freeze import parse_groups

        return ",".join(parse_groups(value)) if value != "all" else "all"

    @model_validator(mode="before")
    @classmethod
    def _baselines_train_all(cls, values: Any) -> Any:
        """Baselines trained end to end (registered with trains_all: transformer, lstm, linear, mlp) train every weight:
        `train` defaults to all for them, and anything else is an error rather than a silently frozen LSTM."""
        if not isinstance(values, dict) or values.get("model", "fpt") == "fpt":
            return values
        from fpt.freeze import GROUPS, parse_groups
        from fpt.registry import trains_all

        if not trains_all(values["model"]):
            return values
        if "train" in values and parse_groups(values["train"]) != GROUPS:
            raise ValueError(
                f"model {values['model']!r} trains every weight; leave out train (it is all), or use model fpt "
                f"to train the groups {values['train']!r}"
            )
        return {**values, "train": "all"}

    @field_validator("method")
    @classmethod
    def _registered_method(cls, name: str) -> str:
        from fpt.registry import METHODS

        try:
            METHODS.resolve(name)
        except FPTError as err:
            raise ValueError(str(err)) from None
        return name

    @model_validator(mode="before")
    @classmethod
    def _method_and_unfreeze_groups(cls, values: Any) -> Any:
        """A method other than fpt trains its tensors (the group "adapter") beside --train's groups, which default to
        the method's (input,output); the groups an unfreeze schedule names train from their step on, so they are
        among train's: `train` is every group the run trains by its end (what is counted, checkpointed, exported)."""
        if not isinstance(values, dict) or (values.get("method", "fpt") == "fpt" and not values.get("unfreeze")):
            return values
        from fpt.freeze import GROUPS, parse_groups
        from fpt.registry import METHODS
        from fpt.unfreeze import parse_schedule

        what = f"method {values.get('method')!r}" if values.get("method", "fpt") != "fpt" else "unfreeze"
        if values.get("model", "fpt") != "fpt":
            raise ValueError(f"{what} works in model fpt's pretrained backbone, not in model {values['model']!r}")
        if values.get("train") == "all":
            raise ValueError(f"train all trains every weight from the start (full fine-tuning); it takes no {what}")
        try:
            entry = METHODS.resolve(values.get("method", "fpt"))[0]
        except FPTError as err:
            raise ValueError(str(err)) from None
        train = values.get("train", entry.tags.get("default_train", cls.model_fields["train"].default))
        groups = set(parse_groups(train)) | {stage.group for stage in parse_schedule(values.get("unfreeze"))}
        if entry.name != "fpt":
            groups.add("adapter")
        return {**values, "train": ",".join(g for g in GROUPS if g in groups)}

    @model_validator(mode="after")
    def _method_options(self) -> TrainConfig:
        """The adapter group needs a method, and a method's options (lora_rank, targets, ...) need their method."""
        from fpt.registry import METHODS

        if self.method == "fpt" and self.train != "all" and "adapter" in self.train.split(","):
            raise ValueError("train: the group adapter holds a method's tensors; choose a method (lora, ia3, ...)")
        fields = type(self).model_fields
        options = METHODS.resolve(self.method)[0].tags.get("options", ())
        stray = [k for k in METHOD_OPTIONS if k not in options and getattr(self, k) != fields[k].default]
        if stray:
            raise ValueError(f"{', '.join(stray)}: not an option of method {self.method!r}; leave it out")
        return self

    @model_validator(mode="after")
    def _reservoir_trains_the_head(self) -> TrainConfig:
        if self.cache_features and self.train != "output":
            raise ValueError(
                f"cache_features trains the head alone on cached frozen features; it needs train: output, "
                f"got {self.train!r}"
            )
        return self


# each method's registry tags name its own
METHOD_OPTIONS = ("lora_rank", "lora_alpha", "lora_dropout", "prompt_tokens", "targets")


def members(annotation: Any) -> tuple[Any, ...]:
    """The types a field accepts: a union's members, or the annotation itself."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return typing.get_args(annotation) if union else (annotation,)


# The fields sweep run ids were first made of. A field added later enters a run's identity only when it is set away
# from its default, so adding a field keeps every earlier run id (and a half-done run's checkpoint) valid.
FIRST_FIELDS = (
    "task", "task_args", "model", "backbone", "backbone_path", "init", "train", "input_init", "readout", "dropout",
    "optimizer", "lr", "weight_decay", "batch_size", "steps", "warmup_steps", "schedule", "clip", "eval_every",
    "eval_batch_size", "patience", "seed", "threads", "device", "precision", "compile", "width", "lstm_layers",
    "mlp_layers", "cache_features",
)  # fmt: skip


def identity(values: dict[str, Any]) -> dict[str, Any]:
    """What names a run among config values (a TrainConfig dump): every field but the placement ones, and a field
    added after FIRST_FIELDS only where it differs from its default."""
    fields = TrainConfig.model_fields
    return {
        k: v
        for k, v in values.items()
        if k not in PLACEMENT_FIELDS and (k in FIRST_FIELDS or k not in fields or v != fields[k].get_default())
    }


MAX_ERRORS = 3  # locations a one-line error message names; the rest are counted


def unknown_key(keys: Sequence[str], allowed: Iterable[str], kind: str = "config") -> str:
    """ "unknown config key 'x'; allowed keys: a, b" (without the list when `allowed` is empty)."""
    allowed = ", ".join(allowed)
    named = f"key{'s' if len(keys) > 1 else ''} {', '.join(map(repr, keys))}"
    return f"unknown {kind} {named}" + (f"; allowed keys: {allowed}" if allowed else "")


UNION_TAGS = {"str", "int", "float", "bool", "bytes", "none", "list", "dict"}  # and any tag holding "[": list[int]


def error_location(loc: Sequence[int | str], names: Mapping[str, str] | None = None) -> str:
    """('tasks', 'xor', 'lr') → 'tasks.xor.lr', ('inputs', 0, 2) → 'inputs[0][2]'; the tags pydantic adds for a
    union's branches ('lr', 'float'), ('inputs', 'list[int]') are dropped, and `names` renames the top-level key (a
    field → its --option)."""
    parts = [p for i, p in enumerate(loc) if not (i and isinstance(p, str) and ("[" in p or p in UNION_TAGS))]
    if names and parts and str(parts[0]) in names:
        parts[0] = names[str(parts[0])]
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def nested_model(model: type[BaseModel] | None, loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model whose keys `loc` (the location of an unknown key) names, following nested model fields."""
    for part in loc:
        info = model.model_fields.get(str(part)) if model else None
        annotation = info.annotation if info else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def format_validation_error(
    err: ValidationError | Iterable[Mapping[str, Any]],
    model: type[BaseModel] | None = None,
    kind: str = "config",
    names: Mapping[str, str] | None = None,
) -> str:
    """A pydantic error (or the error list of one, as FastAPI's) as one line: 'lr: Input should be greater than 0
    (got -1)'. An unknown key lists `model`'s keys ("unknown config key 'x'; allowed keys: ..."); `kind` names what
    was validated; `names` renames top-level keys (a settings field → its command-line option)."""
    errors = list(err.errors() if isinstance(err, ValidationError) else err)
    for e in errors:
        if e["type"] == "json_invalid":
            return f"malformed JSON: {e.get('ctx', {}).get('error', e['msg'])}"
    lines: list[tuple[str, list[str], str]] = []  # (location, its messages, what it got)
    at: dict[str, list[str]] = {}  # location → its messages, joined with "or" (a union's branches)
    unknown: dict[tuple, list[str]] = {}  # location of a mapping → its unknown keys
    for e in errors:
        loc = tuple(e["loc"])
        if e["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
            continue
        where, got = error_location(loc, names) or kind, e.get("input")
        if where not in at:
            shown = "" if isinstance(got, dict) or e["type"] == "missing" else repr(got)
            at[where] = []
            lines.append((where, at[where], shown if len(shown) <= 80 else shown[:77] + "..."))
        if e["msg"].removeprefix("Value error, ") not in at[where]:
            at[where].append(e["msg"].removeprefix("Value error, "))
    for loc, keys in unknown.items():
        owner = nested_model(model, loc)
        allowed = owner.model_fields if owner else ()
        lines.insert(0, (error_location(loc, names), [unknown_key(keys, allowed, kind)], ""))
    text = [
        (f"{where}: " if where else "") + " or ".join(messages) + (f" (got {got})" if got else "")
        for where, messages, got in lines
    ]
    more = len(text) - MAX_ERRORS
    return "; ".join(text[:MAX_ERRORS]) + (f"; and {more} more" if more > 0 else "")


def make_config(values: dict[str, Any]) -> TrainConfig:
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        raise FPTError(format_validation_error(err, TrainConfig)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML is an FPTError naming the file (and line)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FPTError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise FPTError(f"{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FPTError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data
