"""Task patches: what a run trained, and nothing else, as a small safetensors file that fits one frozen backbone.

A patch holds exactly `fpt.freeze.trained_state` of the best-on-validation model (by default the input layer, the
head, the layer norms and the position table), plus metadata as JSON strings in the safetensors header: fpt version,
backbone, a SHA-256 fingerprint of the frozen weights it was trained on, the task spec, the trained groups, the
metrics and the resolved config. Loading rebuilds the model and refuses a backbone whose fingerprint differs.
No pickle anywhere: tensors are safetensors, everything else is JSON. The same patch can also be a peft adapter
folder (`fpt export --format peft`, written by fpt.shipping.peft_adapter): loading reads either form.

    fpt export runs/xor --out xor.fpt.safetensors
    model = fpt.load_patch("xor.fpt.safetensors")       # an FPT in eval mode, backbone fingerprint checked
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from fpt import freeze
from fpt.config import TrainConfig, make_config
from fpt.errors import FPTError
from fpt.placement import available_memory, describe_bytes
from fpt.results import write_atomic
from fpt.tasks.base import TaskSpec
from fpt.version import __version__

PATCH_FORMAT = "fpt-patch/1"
TRAINED_FORMAT = "fpt-trained/1"
TRAINED_FILE = "trained.safetensors"  # written by fpt.train beside result.json
PATCH_SUFFIX = ".fpt.safetensors"
MAX_BUILD_BYTES = 256 << 20  # layers a patch's task spec may size beyond 64 × the patch's bytes
MAX_HEADER_BYTES = 16 << 20  # a patch header is a few KB of JSON, a checkpoint's grows with its curve
METRICS = (
    "val_accuracy", "val_loss", "test_accuracy", "test_loss", "best_step", "steps_run", "trainable_params",
    "total_params",
)  # fmt: skip


# ---- fingerprint of the frozen weights --------------------------------------------------------------------------


def fingerprint(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of each tensor, in name order: the same weights give the same hex
    digest on any device, in any process, whatever order the model lists them in."""
    digest = hashlib.sha256(b"fpt-frozen/1\n")
    for name, tensor in sorted(named, key=lambda item: item[0]):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def frozen_fingerprint(model: nn.Module, groups: Iterable[str]) -> str:
    """Fingerprint of every parameter of `model` outside the trained `groups`: the weights a patch relies on."""
    chosen = set(groups)
    return fingerprint(
        (name, p) for group, members in freeze.named_groups(model).items() if group not in chosen
        for name, p in members.items()
    )  # fmt: skip


def backbone_fingerprint(backbone: nn.Module, groups: Iterable[str]) -> str:
    """The same fingerprint computed on a bare backbone (names as inside an FPT model: "backbone.<name>"); equal to
    `frozen_fingerprint` of any FPT on it whose input and output groups train."""
    chosen = set(groups)
    names = {id(p): f"backbone.{n}" for n, p in backbone.named_parameters()}
    return fingerprint(
        (names[id(p)], p) for group, members in backbone.parameter_groups().items() if group not in chosen
        for p in members
    )  # fmt: skip


# ---- safetensors files: atomic writes, strict reads -------------------------------------------------------------


INTEGRITY_KEY = "sha256"  # metadata entry: content_digest of the file's tensors and other metadata


def content_digest(tensors: dict[str, torch.Tensor], stored: dict[str, str]) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes) and every stored metadata string but the digest's own:
    a flipped byte in a tensor or an edited field (a checkpoint's step, a patch's task spec) changes it."""
    digest = hashlib.sha256(b"fpt-content/1\n")
    for key in sorted(stored):
        if key != INTEGRITY_KEY:
            digest.update(json.dumps([key, stored[key]]).encode() + b"\n")
    digest.update(fingerprint(tensors.items()).encode())
    return digest.hexdigest()


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> int:
    """Write tensors + metadata through a temporary file and a rename; returns the size. Metadata values are stored
    JSON-encoded, except `format` (plain text, so a reader can tell the kind of file before decoding anything), with
    the content digest that read_safetensors verifies."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    stored = encode_metadata(metadata)
    stored[INTEGRITY_KEY] = json.dumps(content_digest(tensors, stored))
    data = safetensors.torch.save(tensors, metadata=stored)
    write_atomic(path, data)
    return len(data)


def encode_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """Metadata as stored: JSON strings, but `format` in plain text; without a content digest."""
    return {k: v if k == "format" else json.dumps(v) for k, v in metadata.items() if k != INTEGRITY_KEY}


def read_header(data: bytes, where: str) -> dict[str, str]:
    """The `__metadata__` of a safetensors blob in memory (an upload, or a file read whole to load its tensors), read
    before the tensors are: safetensors reads metadata from files only (`safe_open`, as read_metadata does)."""
    if len(data) < 8:
        raise FPTError(f"{where}: not a safetensors file (only {len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(MAX_HEADER_BYTES, len(data) - 8):
        raise FPTError(f"{where}: not an fpt file (safetensors header of {size} bytes in a {len(data)}-byte file)")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FPTError(f"{where}: not a safetensors file (its header is not JSON)") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def read_metadata(path: str | Path, expected_format: str) -> dict[str, Any]:
    """The decoded metadata of an fpt safetensors file, reading only its header (safetensors' safe_open)."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise FPTError(f"file not found: {path}") from None
    except OSError as err:
        raise FPTError(f"cannot read {path}: {err.strerror}") from None
    except safetensors.SafetensorError as err:
        raise FPTError(f"{path}: not a safetensors file ({err})") from None
    if meta.get("format") != expected_format:
        raise FPTError(f"{path}: not an {expected_format.split('/')[0]} file (expected format {expected_format!r})")
    try:
        return {k: v if k == "format" else json.loads(v) for k, v in meta.items()}
    except json.JSONDecodeError as err:
        raise FPTError(f"{path}: corrupt metadata ({err})") from None


def read_safetensors(
    data: bytes, where: str, expected_format: str, finite_floats: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of an fpt safetensors blob whose metadata says `format: expected_format`, its
    content digest verified; with `finite_floats`, every tensor must be finite floating point (weights; not RNG
    states)."""
    meta = read_header(data, where)
    kind = expected_format.split("/")[0]
    if meta.get("format") != expected_format:
        found = f"format {meta['format']!r}" if "format" in meta else "no fpt metadata"
        raise FPTError(f"{where}: not an {kind} file ({found}; expected {expected_format!r})")
    try:
        tensors = safetensors.torch.load(data)
        decoded = {k: v if k == "format" else json.loads(v) for k, v in meta.items()}
    except (safetensors.SafetensorError, json.JSONDecodeError, ValueError) as err:
        raise FPTError(f"{where}: corrupt {kind} file ({err})") from None
    check_digest(tensors, meta, decoded.get(INTEGRITY_KEY), where)
    if finite_floats:
        check_finite(tensors, where)
    return tensors, decoded


def check_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    """Weights must be finite floating point."""
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise FPTError(f"{where}: tensor {name!r} is {str(t.dtype).removeprefix('torch.')}, not floating point")
        if not torch.isfinite(t).all():
            raise FPTError(f"{where}: tensor {name!r} holds NaN or inf values")


def check_digest(tensors: dict[str, torch.Tensor], stored: dict[str, str], recorded: Any, where: str) -> None:
    """The recorded content digest must match the tensors and metadata read: else the file was corrupted or edited."""
    if recorded is None:
        raise FPTError(f"{where}: no content digest (sha256) in its metadata: written by fpt 0.1 or edited")
    if recorded != content_digest(tensors, stored):
        raise FPTError(
            f"{where}: content does not match its sha256 digest (recorded {str(recorded)[:16]}…): the file is "
            f"corrupt or was edited"
        )


def read_file(path: str | Path) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FPTError(f"file not found: {path}") from None
    except OSError as err:
        raise FPTError(f"cannot read {path}: {err.strerror}") from None


# ---- the trained state a run leaves behind ----------------------------------------------------------------------


def write_trained(path: str | Path, model: nn.Module, groups: Iterable[str], cfg: TrainConfig, spec: TaskSpec) -> None:
    """Save `model`'s trained groups (fpt.freeze.trained_state) with what a patch needs to find its backbone again."""
    groups = tuple(groups)
    backbone = getattr(model, "backbone", None)
    save_safetensors(
        path,
        freeze.trained_state(model, groups),
        {
            "format": TRAINED_FORMAT,
            "fpt_version": __version__,
            "model": cfg.model,
            "backbone": cfg.backbone,
            "backbone_source": getattr(backbone, "source", None),
            "frozen_sha256": frozen_fingerprint(model, groups),
            "train_groups": list(groups),
            "task_spec": spec.to_dict(),
            "config": cfg.model_dump(),
        },
    )


# ---- patches ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patch:
    """A parsed, validated patch: its tensors and what they were trained as."""

    tensors: dict[str, torch.Tensor]
    config: TrainConfig
    spec: TaskSpec
    groups: tuple[str, ...]
    frozen_sha256: str
    metrics: dict[str, Any]
    meta: dict[str, Any] = field(repr=False)  # every metadata entry, decoded
    nbytes: int = 0  # size of the file
    params: int = 0  # numbers in its tensors

    @property
    def backbone(self) -> str:
        return self.config.backbone

    def summary(self) -> dict[str, Any]:
        """What `GET /v1/tasks` and `fpt load` show."""
        return {
            "task": self.spec.name,
            "model": self.config.model,
            "backbone": self.backbone,
            "init": self.config.init,
            "input": self.spec.shape(),
            "task_spec": self.spec.to_dict(),
            "train_groups": list(self.groups),
            "metrics": self.metrics,
            "frozen_sha256": self.frozen_sha256,
            "patch_bytes": self.nbytes,
            "patch_params": self.params,
            "fpt_version": self.meta.get("fpt_version"),
        }


def spec_from_dict(data: Any, where: str) -> TaskSpec:
    """A TaskSpec from its `to_dict()` form, checked field by field (patches may come from anywhere)."""
    try:
        spec = TaskSpec(**{**data, "label_names": tuple(data["label_names"]) if data.get("label_names") else None})
    except (TypeError, KeyError, AttributeError) as err:
        raise FPTError(f"{where}: bad task_spec ({err})") from None
    sizes = ("input_dim", "num_classes", "max_tokens", "num_outputs", "predictions_per_token")
    bad = [s for s in sizes if not isinstance(getattr(spec, s), int) or not 0 < getattr(spec, s) < 1 << 24]
    if bad or spec.input not in ("features", "tokens") or spec.readout not in ("last", "mean"):
        raise FPTError(f"{where}: bad task_spec ({', '.join(bad) or 'input/readout'})")
    if spec.label_names is not None and len(spec.label_names) != spec.num_classes:
        raise FPTError(f"{where}: bad task_spec ({len(spec.label_names)} label names for {spec.num_classes} classes)")
    return spec


def check_spec_fits_tensors(spec: TaskSpec, tensors: dict[str, torch.Tensor], where: str, nbytes: int) -> None:
    """The task spec must agree with the patch's own input layer and head before a model is built from it, and the
    layers the spec sizes (built before the patch is copied in) may take at most MAX_BUILD_BYTES or 64 × the patch's
    size: a spec cannot make the loader allocate what the patch's tensors do not show."""
    head, layer = tensors.get("head.weight"), tensors.get("input_layer.weight")
    outputs = spec.predictions_per_token * spec.num_classes
    if head is not None and (head.dim() != 2 or head.shape[0] != outputs):
        raise FPTError(
            f"{where}: task_spec gives {outputs} outputs per read-out token (predictions_per_token × num_classes) but "
            f"head.weight is {list(head.shape)}"
        )
    if layer is not None:
        size = layer.shape[0] if spec.input == "tokens" else layer.shape[-1]
        if layer.dim() != 2 or size != spec.input_dim:
            raise FPTError(f"{where}: task_spec gives input_dim {spec.input_dim} but input_layer.weight is "
                           f"{list(layer.shape)}")  # fmt: skip
    width = head.shape[-1] if head is not None else layer.shape[-1] if layer is not None else 1024
    need = 4 * width * (spec.input_dim + outputs)  # fp32 input layer and head
    free = available_memory()
    limit = min(max(MAX_BUILD_BYTES, 64 * nbytes), free // 2 if free is not None else MAX_BUILD_BYTES)
    if need > limit:
        raise FPTError(
            f"{where}: task_spec sizes (input_dim {spec.input_dim}, {outputs} outputs) would need "
            f"{describe_bytes(need)} of layers that the patch's {describe_bytes(nbytes)} do not hold; refused"
        )


def parse_patch(data: bytes, where: str) -> Patch:
    """Validate a patch's bytes (from a file or an upload): format, metadata, finite float tensors."""
    tensors, meta = read_safetensors(data, where, PATCH_FORMAT)
    return checked_patch(tensors, meta, where, len(data))


def checked_patch(tensors: dict[str, torch.Tensor], meta: dict[str, Any], where: str, nbytes: int) -> Patch:
    """A Patch from tensors and decoded metadata, whatever file they came in, once its metadata and task spec are
    checked against them."""
    missing = [k for k in ("config", "task_spec", "train_groups", "frozen_sha256") if k not in meta]
    if missing:
        raise FPTError(f"{where}: patch metadata lacks {', '.join(missing)}")
    if not isinstance(meta["config"], dict) or not isinstance(meta["frozen_sha256"], str):
        raise FPTError(f"{where}: bad patch metadata")
    try:
        config = make_config(meta["config"])
        groups = freeze.parse_groups(meta["train_groups"])
    except FPTError as err:
        raise FPTError(f"{where}: bad patch metadata ({err})") from None
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    spec = spec_from_dict(meta["task_spec"], where)
    check_spec_fits_tensors(spec, tensors, where, nbytes)
    params = sum(t.numel() for t in tensors.values())
    return Patch(tensors, config, spec, groups, meta["frozen_sha256"], metrics, meta, nbytes, params)


def read_patch(path: str | Path) -> Patch:
    """A patch file, or a peft adapter folder written by `fpt export --format peft`."""
    if Path(path).is_dir():
        return read_adapter(Path(path))
    return parse_patch(read_file(path), str(path))


# ---- peft adapter folders (written by fpt.shipping.peft_adapter) ------------------------------------------------

PEFT_FORMAT = "fpt-peft/1"
PEFT_META_FILE = "fpt_patch.json"  # beside peft's adapter_config.json and adapter_model.safetensors
PEFT_PREFIX = "base_model.model."  # peft's name for the wrapped model in its adapter files
PEFT_NORM_COPY = ".ln_tuning_layers."  # LN tuning's trained copy of a norm, under the norm's own name


def read_adapter(folder: Path) -> Patch:
    """A peft adapter folder of an fpt run: peft's tensors under fpt's names, checked as a patch file is (the side
    file's content digest covers tensors and metadata; then format, task spec, finite floats)."""
    where = str(folder)
    if not (folder / PEFT_META_FILE).is_file():
        raise FPTError(f"{where} is a folder without {PEFT_META_FILE}: give a patch file, or a folder written by "
                       f"fpt export --format peft")  # fmt: skip
    meta, adapter = (read_json(folder / name, where) for name in (PEFT_META_FILE, "adapter_config.json"))
    if meta.get("format") != PEFT_FORMAT or adapter.get("peft_type") != "LN_TUNING":
        raise FPTError(f"{where}: not a peft adapter of an fpt run (expected {PEFT_META_FILE} of format "
                       f"{PEFT_FORMAT!r} and an LN_TUNING adapter_config.json)")  # fmt: skip
    data = read_file(folder / "adapter_model.safetensors")
    try:
        stored = safetensors.torch.load(data)
    except (safetensors.SafetensorError, ValueError) as err:
        raise FPTError(f"{where}: corrupt adapter_model.safetensors ({err})") from None
    outside = [k for k in stored if not k.startswith(PEFT_PREFIX)]
    if outside:
        raise FPTError(f"{where}: adapter tensor {outside[0]!r} is not under peft's {PEFT_PREFIX!r}")
    tensors = {k.removeprefix(PEFT_PREFIX).replace(PEFT_NORM_COPY, "."): t for k, t in stored.items()}
    check_digest(tensors, encode_metadata(meta), meta.get(INTEGRITY_KEY), where)
    check_finite(tensors, where)
    return checked_patch(tensors, meta, where, len(data))


def read_json(path: Path, where: str) -> dict[str, Any]:
    try:
        data = json.loads(read_file(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FPTError(f"{where}: {path.name} is not JSON ({err})") from None
    if not isinstance(data, dict):
        raise FPTError(f"{where}: {path.name} is not a JSON object")
    return data


def read_run(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A finished run's trained tensors and the metadata a patch of them carries."""
    if not run_dir.is_dir():
        raise FPTError(f"run folder not found: {run_dir}")
    if not (run_dir / "result.json").is_file():
        raise FPTError(
            f"{run_dir} has no result.json: the run has not finished (resume it: fpt train --resume --out {run_dir})"
        )
    if not (run_dir / TRAINED_FILE).is_file():
        raise FPTError(f"{run_dir} has no {TRAINED_FILE} (written by fpt train since fpt 0.1; train the run again)")
    trained = run_dir / TRAINED_FILE
    tensors, meta = read_safetensors(read_file(trained), str(trained), TRAINED_FORMAT)
    try:
        result = json.loads((run_dir / "result.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FPTError(f"cannot read {run_dir / 'result.json'}: {err}") from None
    if result.get("config") != meta.get("config"):
        raise FPTError(f"{run_dir}: result.json and {TRAINED_FILE} come from different runs (their configs differ)")
    return tensors, {
        **{k: v for k, v in meta.items() if k != INTEGRITY_KEY},
        "format": PATCH_FORMAT,
        "fpt_version": __version__,
        "trained_with_fpt_version": meta.get("fpt_version"),
        "metrics": {k: result[k] for k in METRICS if k in result},
    }


def export(run_dir: str | Path, out: str | Path | None = None, overwrite: bool = False) -> tuple[Path, Patch]:
    """Turn a finished run folder (trained.safetensors + result.json) into a patch file; returns its path and it. An
    existing file at the patch's path is refused unless `overwrite`."""
    run_dir = Path(run_dir)
    tensors, meta = read_run(run_dir)
    out = Path(out) if out is not None else run_dir / f"{run_dir.resolve().name}{PATCH_SUFFIX}"
    if out.is_dir():
        raise FPTError(f"--out {out} is a folder; give the patch file's path")
    if out.exists() and not overwrite:
        raise FPTError(f"{out} already exists; give --overwrite to replace it, or another --out")
    save_safetensors(out, tensors, meta)
    return out, read_patch(out)


def check_fits(patch: Patch, fingerprint_here: str, where: str, backbone_desc: str) -> None:
    if fingerprint_here != patch.frozen_sha256:
        raise FPTError(
            f"{where} does not fit this backbone: it was trained on {patch.backbone!r} ({patch.config.init}) whose "
            f"frozen weights hash to sha256 {patch.frozen_sha256[:16]}…, but {backbone_desc} hashes to "
            f"{fingerprint_here[:16]}…; load it with the backbone it was trained on"
        )


def load_state_strict(model: nn.Module, tensors: dict[str, torch.Tensor], groups: Iterable[str], where: str) -> None:
    """Copy a patch into `model`: its tensors must be exactly the model's trained groups, same names and shapes."""
    own = freeze.trained_state(model, groups)
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    wrong = [f"{n} {list(tensors[n].shape)} vs {list(own[n].shape)}" for n in own if n in tensors and
             (tensors[n].shape != own[n].shape or tensors[n].dtype != own[n].dtype)]  # fmt: skip
    if missing or unexpected or wrong:
        raise FPTError(
            f"{where} does not match the model it describes: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape or dtype {wrong[:5]}"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)


def backbone_source(patch: Patch, backbone_path: str | None, where: str) -> str | None:
    """Where the backbone is read from: the caller's `backbone_path`, else the registry's default. A patch never
    chooses a path to read (its config's backbone_path is a record of where it was trained, not an instruction)."""
    if backbone_path is None and patch.config.backbone_path is not None:
        raise FPTError(
            f"{where} was trained on backbone {patch.backbone!r} from {patch.config.backbone_path!r}; fpt does not "
            f"read paths named inside a patch: give that backbone's folder or hub id (--backbone-path), its frozen "
            f"weights are checked against the patch"
        )
    return backbone_path


def from_patch(path: str | Path, backbone_path: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the trained model from a patch: the backbone it names (or the folder `backbone_path`), checked against
    the patch's fingerprint of the frozen weights, with the patch's tensors loaded. Returned in eval mode, with the
    parsed patch as `.patch`."""
    return build_patched(read_patch(path), backbone_path, str(path)).to(device).eval()


def build_patched(patch: Patch, backbone_path: str | None, where: str) -> nn.Module:
    """The model `patch` was trained as, on the CPU: built with the run's seed on its backbone (`backbone_path`, else
    the registry's), the backbone checked against the patch's fingerprint, the patch's tensors loaded strictly."""
    from fpt.registry import MODELS

    cfg = patch.config.model_copy(update={"backbone_path": backbone_source(patch, backbone_path, where),
                                          "device": "cpu"})  # fmt: skip
    with torch.random.fork_rng(devices=[]):  # the same seeded build as fpt.train.build_model, without side effects
        torch.manual_seed(cfg.seed)
        model = MODELS.build(cfg.model, cfg=cfg, spec=patch.spec)
    freeze.apply(model, patch.groups)
    source = getattr(getattr(model, "backbone", None), "source", cfg.backbone)
    check_fits(patch, frozen_fingerprint(model, patch.groups), where, f"{cfg.backbone!r} from {source}")
    load_state_strict(model, patch.tensors, patch.groups, where)
    model.patch = patch
    return model


def backbone_bytes_on_disk(source: str | None) -> int | None:
    """Size of the weight files a backbone was loaded from (a folder's *.safetensors/*.bin/*.gguf, or one file)."""
    if not source:
        return None
    path = Path(source)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        files = [f for ext in ("safetensors", "bin") for f in path.glob(f"*.{ext}")]
        return sum(f.stat().st_size for f in files) or None
    return None


def describe_size(patch_bytes: int, backbone_bytes: int | None) -> str:
    text = f"{patch_bytes / 1024:,.1f} KiB"
    if backbone_bytes:
        text += f" = {100 * patch_bytes / backbone_bytes:.2f}% of the backbone's {backbone_bytes / 2**20:,.1f} MiB"
    return text
