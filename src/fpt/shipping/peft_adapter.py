"""FPT inside peft: the paper's FPT as a peft config for a transformers model, and a finished fpt run as a peft
adapter folder.

peft has no FPT method, and one cannot be registered from outside (`register_peft_method` takes only names of peft's
own PeftType enum), but none is needed: FPT is LN tuning plus whole trained modules. `peft_config` returns an
`LNTuningConfig` whose `target_modules` are the model's layer norms (trained copies, the originals frozen) and whose
`modules_to_save` are its position table and task head; everything else stays frozen. The adapter it saves is a
plain peft one: loading it takes peft alone.

    model = get_peft_model(base, fpt.peft_config(base))        # layer norms, positions and head train
    model.save_pretrained("adapter")
    model = PeftModel.from_pretrained(base_again, "adapter")

The modules come from the model's structure by the rule fpt trains by (fpt.freeze's groups): the body
(`model.base_model`) is split by its family's `body_groups` (fpt.backbones, chosen by `config.model_type`), every
parameter outside the body is the "output" group (the task head: BERT's `classifier`, GPT-2's and Llama's `score`; a
tied LM head is the token embedding, not a head), and "input" is empty (a transformers model reads tokens through
its frozen embedding; fpt's trained input layer exists only in fpt's own model).

`fpt export RUN --format peft` (`export_adapter`) writes an fpt run the same way. The adapter wraps fpt's whole FPT
model, so the input layer and head are `modules_to_save` beside the backbone's norms and positions; fpt's metadata
(task spec, trained groups, metrics, config, the frozen weights' fingerprint and a content digest) goes in
fpt_patch.json beside peft's two files. `fpt load FOLDER` reads it back (fpt.shipping.patch.read_adapter) and refuses
a backbone whose fingerprint differs; peft's own `PeftModel.from_pretrained` on an FPT model checks no fingerprint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from fpt import freeze
from fpt.backbones import family_of
from fpt.errors import FPTError
from fpt.freeze import PAPER_GROUPS
from fpt.shipping.patch import (
    INTEGRITY_KEY,
    PEFT_FORMAT,
    PEFT_META_FILE,
    Patch,
    build_patched,
    checked_patch,
    content_digest,
    encode_metadata,
    read_adapter,
    read_run,
)


def peft_config(model: nn.Module, train: str | Iterable[str] = PAPER_GROUPS, task_type: str | None = None) -> Any:
    """The peft config that trains `train`'s groups of `model` and freezes the rest: by default the paper's FPT (layer
    norms, positions, and the head). `model` is a transformers model of a family fpt knows (bert, gpt2, llama,
    mistral, qwen2, ...) or an fpt model; `task_type` is peft's (e.g. "SEQ_CLS"), None for a plain PeftModel.

        peft_model = get_peft_model(model, fpt.peft_config(model))
    """
    if hasattr(model, "parameter_groups"):  # fpt's own models say their groups
        groups = freeze.named_groups(model)
    else:
        family = family_of(model_type(model))
        try:
            groups = freeze.named_groups(model, transformers_groups(model, family.body_groups))
        except (AttributeError, ValueError) as err:
            raise FPTError(
                f"{type(model).__name__}: its body is not built as fpt's {family.family} family's ({err})"
            ) from None
    return adapter_config(model, groups, freeze.parse_groups(train), task_type)


def model_type(model: nn.Module) -> str:
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if not isinstance(kind, str) or not hasattr(model, "base_model"):
        raise FPTError(f"{type(model).__name__} is neither a transformers model nor an fpt model")
    return kind


def transformers_groups(model: nn.Module, body_groups) -> dict[str, list[nn.Parameter]]:
    """fpt.freeze's groups of a transformers model: its body's by family, the rest of it the head ("output")."""
    body = model.base_model
    inside = {id(p) for p in body.parameters()}
    head = [p for p in model.parameters() if id(p) not in inside]
    return {"input": [], "output": head, **body_groups(body), "adapter": []}


def adapter_config(
    model: nn.Module, groups: dict[str, dict[str, nn.Parameter]], train: tuple[str, ...], task_type: str | None = None
) -> Any:
    """LN tuning on the norms of the layernorm group, and the modules of the other trained groups saved whole."""
    from peft import LNTuningConfig

    if "layernorm" not in train or not groups["layernorm"]:
        raise FPTError("a peft adapter carries FPT as LN tuning: the trained groups must include layernorm")
    if groups["adapter"]:
        raise FPTError("the model already carries a method's adapter (lora, ia3, ...); peft adapters do not nest")
    others = {name: p for group in train if group != "layernorm" for name, p in groups[group].items()}
    return LNTuningConfig(
        target_modules=modules_holding(model, groups["layernorm"]),
        modules_to_save=modules_holding(model, others) or None,
        task_type=task_type,
    )


def modules_holding(model: nn.Module, params: dict[str, nn.Parameter]) -> list[str]:
    """Full names of the modules that hold `params` and nothing else, outermost first: peft trains and saves whole
    modules, so every parameter of a chosen module, its submodules' included, must be among `params`."""
    chosen = {id(p) for p in params.values()}
    names: list[str] = []
    covered: set[int] = set()
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        inside_chosen = any(name.startswith(f"{outer}.") for outer in names)
        if name and own and not inside_chosen and all(id(p) in chosen for p in module.parameters()):
            names.append(name)
            covered |= {id(p) for p in module.parameters()}
    left = [name for name, p in params.items() if id(p) not in covered]
    if left:
        raise FPTError(
            f"parameter {left[0]} shares its module with parameters that stay frozen, and a peft adapter trains and "
            f"saves whole modules; leave its group out of the trained groups"
        )
    return names


def wrap(model: nn.Module, config: Any) -> nn.Module:
    """get_peft_model, without peft's note that norms have no in/out features."""
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Unsupported layer type", UserWarning)
        return get_peft_model(model, config)


def export_adapter(
    run_dir: str | Path, out: str | Path | None = None, backbone_path: str | None = None, overwrite: bool = False
) -> tuple[Path, Patch]:
    """Write a finished fpt run as a peft adapter folder (default RUN_DIR/<name>.peft) and return its path and the
    patch read back from it. The run's model is rebuilt on its backbone (`backbone_path`, as for loading a patch),
    checked against the run's fingerprint, wrapped by peft and saved by peft."""
    run_dir = Path(run_dir)
    tensors, meta = read_run(run_dir)
    patch = checked_patch(tensors, meta, str(run_dir), sum(t.nbytes for t in tensors.values()))
    if patch.config.method != "fpt":
        raise FPTError(f"{run_dir}: --format peft writes runs of method fpt, not {patch.config.method!r}; export it as "
                       f"a patch file")  # fmt: skip
    out = Path(out) if out is not None else run_dir / f"{run_dir.resolve().name}.peft"
    if out.is_file():
        raise FPTError(f"--out {out} is a file; give the peft adapter folder's path")
    if out.exists() and not overwrite:
        raise FPTError(f"{out} already exists; give --overwrite to replace the folder, or another --out")
    model = build_patched(patch, backbone_path, str(run_dir))
    peft_model = wrap(model, adapter_config(model, freeze.named_groups(model), patch.groups))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    if trainable != patch.params:  # peft matched modules by name suffix: exactly the run's tensors, or refused
        raise FPTError(
            f"{run_dir}: the peft adapter would train {trainable:,} numbers, the run trained {patch.params:,}"
        )
    side = {**meta, "format": PEFT_FORMAT}
    side[INTEGRITY_KEY] = content_digest(tensors, encode_metadata(side))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        peft_model.save_pretrained(tmp)
        (tmp / PEFT_META_FILE).write_text(json.dumps(side, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, read_adapter(out)
