"""One frozen core, many tasks: a forward pass in which every row of the batch belongs to its own task.

The backbone's frozen weights (attention, feed-forward, embeddings) are held once. What a task trained inside the
backbone (by default its layer norms and its position table) is stacked over tasks, (N, ...), and gathered per row,
so rows of different tasks go through the frozen body together (the forward training runs), each with its own norms
and positions. Input layers and heads differ in shape between tasks (features or tokens, number of classes), so each
runs on its own task's rows, before and after the shared pass.

A backbone family joins by subclassing SharedCore (which parameters it stacks, and its forward) and registering it
under its `Backbone.family`: `@CORES.register("bert", ...)`.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fpt.backbones import Backbone
from fpt.backbones.base import prepend
from fpt.backbones.bert import BertBackbone, RowNorms
from fpt.errors import FPTError
from fpt.model import readout
from fpt.registry import Registry
from fpt.shipping.patch import Patch, backbone_fingerprint, check_fits
from fpt.tasks.base import TaskSpec

CORES: Registry[SharedCore] = Registry("shared core")  # backbone family → SharedCore subclass
PER_TASK_GROUPS = ("layernorm", "positional")  # backbone groups a served patch may carry: stacked per task
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PROMPT = "backbone.prompt.embedding.weight"  # prompt tuning's tokens in a patch (fpt.methods.prompt)


def check_outputs(logits: torch.Tensor) -> None:
    """Logits (n, K, C) must be finite: an example whose values overflow the model (features of 1e38) gets an error
    naming it, not a class picked from NaNs."""
    bad = (~torch.isfinite(logits)).flatten(1).any(1).nonzero().flatten().tolist()
    if bad:
        raise FPTError(
            f"inputs[{bad[0]}]: the model's outputs are not finite for this example (its values are too large for "
            f"the model; scale the inputs as in training)"
        )


def check_examples(spec: TaskSpec, inputs: Any, readout: str | None = None) -> list[torch.Tensor]:
    """Validate a list of examples for a task and turn them into tensors: each (T, input_dim) finite floats for a
    features task, or (T,) token ids in 1..input_dim-1 for a tokens task (0 is padding), with T at most the task's
    longest and, with readout "last", at least the tokens read out. Errors are FPTErrors naming the example."""
    longest = spec.max_tokens
    shortest = spec.num_outputs if (readout or spec.readout) == "last" else 1
    if not isinstance(inputs, list) or not inputs:
        raise FPTError("inputs: expected a non-empty list of examples")
    out = []
    for i, example in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(example, list) or not shortest <= len(example) <= longest:
            got = f"{len(example)} tokens" if isinstance(example, list) else type(example).__name__
            raise FPTError(
                f"{where}: expected a list of {shortest}..{longest} tokens for task {spec.name!r}, got {got}"
            )
        if spec.input == "tokens":
            if not all(type(t) is int for t in example):
                raise FPTError(f"{where}: task {spec.name!r} takes token ids, integers in 1..{spec.input_dim - 1}")
            if not all(0 < t < spec.input_dim for t in example):
                raise FPTError(f"{where}: token ids must be in 1..{spec.input_dim - 1} (0 is padding)")
            x = torch.tensor(example, dtype=torch.long)
        else:
            rows = [r for r in example if isinstance(r, list) and len(r) == spec.input_dim]
            if len(rows) != len(example):
                raise FPTError(f"{where}: expected each token as a list of {spec.input_dim} numbers for {spec.name!r}")
            try:
                x = torch.tensor(example, dtype=torch.float32)
            except (TypeError, ValueError, OverflowError):
                raise FPTError(f"{where}: token values must be numbers") from None
            if not torch.isfinite(x).all():
                raise FPTError(f"{where}: values must be finite (no NaN or infinity)")
        out.append(x)
    return out


def pad(examples: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples (T_i, ...) → x (n, T, ...) zero-padded, mask (n, T) bool."""
    longest = max(x.shape[0] for x in examples)
    x = examples[0].new_zeros((len(examples), longest, *examples[0].shape[1:]))
    mask = torch.zeros(len(examples), longest, dtype=torch.bool)
    for i, example in enumerate(examples):
        x[i, : len(example)] = example
        mask[i, : len(example)] = True
    return x, mask


@dataclass
class ServedTask:
    """A task on the shared core: its patch's input layer and head, and its row `index` in the core's stacks."""

    name: str
    patch: Patch
    index: int
    input_layer: nn.Module  # (n, T[, d]) → (n, T, D)
    head: nn.Linear  # (n, k, D) → (n, k, predictions_per_token · classes)
    prompt: torch.Tensor | None = None  # (N, D) prompt tuning's virtual tokens, read before each row's inputs

    @property
    def spec(self) -> TaskSpec:
        return self.patch.spec

    @property
    def readout(self) -> str:
        return self.patch.config.readout or self.spec.readout  # as fpt.model.FPT chose it

    @property
    def num_outputs(self) -> int:
        return self.spec.num_outputs if self.readout == "last" else 1

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, **self.patch.summary()}


class SharedCore(nn.Module):
    """A frozen backbone shared by tasks; subclasses say which parameters are stacked per task and run the body."""

    # Stacked keys whose per-task values differ in length along dim 1 (position rows: each task keeps only the rows
    # its inputs reach). They are kept as one flat table, dim 1 concatenated, each task's rows from offsets[key].
    ragged: tuple[str, ...] = ()

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.tasks: dict[str, ServedTask] = {}
        self.stacks: dict[str, torch.Tensor] = {}  # key → (N, n, ...): per task, the parameters of stacked()[key]
        self.offsets: dict[str, torch.Tensor] = {}  # ragged key → (N,) where each task's rows start
        self._values: dict[str, list[torch.Tensor]] = {}  # key → per task (n, ...): views into stacks once stacked
        self._stale = False  # tasks were added since the stacks were built
        self.lock = threading.Lock()  # adding a task changes the stacks; a forward must not see half of it
        self._fingerprints: dict[tuple[str, ...], str] = {}

    # -- what a family implements --------------------------------------------------------------------------------

    def stacked(self) -> dict[str, list[nn.Parameter]]:
        """key → the backbone parameters (of PER_TASK_GROUPS) stacked under it, all of one shape."""
        raise NotImplementedError

    def trim(self, key: str, value: torch.Tensor, length: int) -> torch.Tensor:
        """Drop what a task can never use (e.g. position rows past the `length` tokens its rows reach: its longest
        input and its prompt tokens); value is (n, ...)."""
        return value

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """embeds (B, T, D), mask (B, T) bool, rows (B,) task index of each row → hidden states (B, T, D)."""
        raise NotImplementedError

    # -- tasks ----------------------------------------------------------------------------------------------------

    def fingerprint(self, groups: tuple[str, ...]) -> str:
        if groups not in self._fingerprints:  # hashed once per trained-group set
            self._fingerprints[groups] = backbone_fingerprint(self.backbone, groups)
        return self._fingerprints[groups]

    def add(self, name: str, patch: Patch, where: str) -> ServedTask:
        """Check that `patch` fits this core and add it as task `name` (FPTError naming `where` if not)."""
        if not TASK_NAME.fullmatch(name):
            raise FPTError(f"task name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
        if name in self.tasks:
            raise FPTError(f"task {name!r} is already served")
        if patch.config.model != "fpt":
            raise FPTError(f"{where}: model {patch.config.model!r} has no frozen core to share; only fpt patches serve")
        has_prompt = patch.config.method == "prompt"  # its adapter: virtual tokens before each row, nothing shared
        allowed = ("input", "output", *PER_TASK_GROUPS, *(("adapter",) if has_prompt else ()))
        unsupported = [g for g in patch.groups if g not in allowed]
        if unsupported or not {"input", "output"} <= set(patch.groups):
            raise FPTError(
                f"{where}: trains {', '.join(patch.groups)}; a shared frozen core serves patches that train input "
                f"and output, of the backbone only {' and '.join(PER_TASK_GROUPS)}, and prompt tuning's tokens"
            )
        check_fits(patch, self.fingerprint(patch.groups), where, f"the served {self.backbone.name!r}")
        spec = patch.spec
        prompt = patch.tensors.get(PROMPT) if has_prompt else None
        if has_prompt and (prompt is None or prompt.ndim != 2 or prompt.shape[1] != self.backbone.hidden_size):
            raise FPTError(f"{where}: missing or misshapen {PROMPT} (want [tokens, {self.backbone.hidden_size}])")
        length = spec.max_tokens + (len(prompt) if has_prompt else 0)  # the positions its rows reach
        self.backbone.check_length(length)
        input_layer, head = self.task_layers(patch, where)
        values = {}
        names = {id(p): f"backbone.{n}" for n, p in self.backbone.named_parameters()}
        for key, params in self.stacked().items():
            tensors = [patch.tensors.get(names[id(p)], p.detach()) for p in params]
            if any(t.shape != p.shape for t, p in zip(tensors, params, strict=True)):
                raise FPTError(f"{where}: a {key} tensor has the wrong shape for this backbone")
            values[key] = self.trim(key, torch.stack(tensors), length).clone()  # clone: not a view of all the rows
        used = {
            "input_layer.weight",
            "input_layer.bias",
            "head.weight",
            "head.bias",
            *((PROMPT,) if has_prompt else ()),
        } | {names[id(p)] for params in self.stacked().values() for p in params}
        unknown = sorted(set(patch.tensors) - used)
        if unknown:
            raise FPTError(f"{where}: tensors this backbone has no place for: {unknown[:5]}")
        with self.lock:
            if name in self.tasks:  # added meanwhile
                raise FPTError(f"task {name!r} is already served")
            for key, value in values.items():
                self._values.setdefault(key, []).append(value)
            self._stale = True  # stacked at the next forward: adding N tasks costs one stacking, not N
            task = ServedTask(name, replace(patch, tensors={}), len(self.tasks), input_layer, head, prompt)  # copied
            self.tasks[name] = task
        return task

    def restack(self) -> None:
        """Build each (N, ...) stack (or flat table, for ragged keys) from the tasks' values, and keep the values as
        views into it (no second copy). Call with the lock held."""
        if not self._stale:
            return
        for key, values in self._values.items():
            if key in self.ragged:
                rows = [v.shape[1] for v in values]
                self.stacks[key] = torch.cat(values, dim=1)  # (n, Σ rows, ...)
                self.offsets[key] = torch.tensor([0, *rows[:-1]]).cumsum(0)
                self._values[key] = list(self.stacks[key].split(rows, dim=1))
            else:
                self.stacks[key] = torch.stack(values)  # (N, n, ...)
                self._values[key] = list(self.stacks[key].unbind(0))
        self._stale = False

    def task_layers(self, patch: Patch, where: str) -> tuple[nn.Module, nn.Linear]:
        """The input layer and head, built from the patch's tensors (their shapes checked against its spec)."""
        spec, t, d_model = patch.spec, patch.tensors, self.backbone.hidden_size
        if spec.input == "tokens":
            shapes = {"input_layer.weight": (spec.input_dim, d_model)}
        else:
            shapes = {"input_layer.weight": (d_model, spec.input_dim), "input_layer.bias": (d_model,)}
        classes = spec.predictions_per_token * spec.num_classes
        shapes |= {"head.weight": (classes, d_model), "head.bias": (classes,)}
        wrong = [f"{n} (want {list(s)})" for n, s in shapes.items() if n not in t or tuple(t[n].shape) != s]
        if wrong:
            raise FPTError(f"{where}: missing or misshapen {', '.join(wrong)}")
        if spec.input == "tokens":
            input_layer: nn.Module = nn.Embedding.from_pretrained(t["input_layer.weight"])
        else:
            input_layer = nn.Linear(spec.input_dim, d_model)
            input_layer.load_state_dict({"weight": t["input_layer.weight"], "bias": t["input_layer.bias"]})
        head = nn.Linear(d_model, classes)
        head.load_state_dict({"weight": t["head.weight"], "bias": t["head.bias"]})
        return input_layer.requires_grad_(False), head.requires_grad_(False)

    # -- inference ------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def predict(self, batch: list[tuple[str, list[torch.Tensor]]]) -> list[torch.Tensor]:
        """[(task name, examples)] → logits (n, K, C) for each item, with ONE pass through the frozen body for all
        the rows of all the items, whatever their tasks."""
        with self.lock:
            self.restack()
            served = [self.tasks[name] for name, _ in batch]
            padded = [pad(examples) for _, examples in batch]
            inputs = [prompted(task, task.input_layer(x), m) for task, (x, m) in zip(served, padded, strict=True)]
            embeds, masks = [e for e, _ in inputs], [m for _, m in inputs]
            longest = max(e.shape[1] for e in embeds)  # embeds (n_i, N_i + T_i, D): prompt tokens, then inputs
            x = torch.cat([F.pad(e, (0, 0, 0, longest - e.shape[1])) for e in embeds])  # (B, T, D)
            mask = torch.cat([F.pad(m, (0, longest - m.shape[1])) for m in masks])  # (B, T)
            rows = torch.cat([torch.full((len(e),), task.index) for task, e in zip(served, embeds, strict=True)])
            hidden = self(x, mask, rows)  # (B, T, D)
        out, start = [], 0
        for task, (_, m) in zip(served, padded, strict=True):
            skip = 0 if task.prompt is None else len(task.prompt)
            h = hidden[start : start + len(m), skip : skip + m.shape[1]]  # (n_i, T_i, D): the inputs' positions
            features = readout(h, m, task.readout, task.num_outputs)  # (n_i, k, D)
            out.append(task.head(features).reshape(len(m), -1, task.spec.num_classes))
            start += len(m)
        return out

    def memory(self) -> dict[str, int]:
        """Bytes held: the shared backbone (parameters and buffers) and the tasks (stacks, input layers, heads)."""

        def size(tensors) -> int:
            return sum(t.numel() * t.element_size() for t in tensors)

        with self.lock:
            self.restack()
        tasks = size(self.stacks.values()) + sum(
            size(t.input_layer.parameters()) + size(t.head.parameters()) for t in self.tasks.values()
        )
        return {
            "backbone_bytes": size(self.backbone.parameters()) + size(self.backbone.buffers()),
            "tasks_bytes": tasks,
            "tasks": len(self.tasks),
        }


def prompted(task: ServedTask, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, T, D), (n, T) → the task's prompt tokens before each row, as fpt.model.FPT reads them in training."""
    return (embeds, mask) if task.prompt is None else prepend(task.prompt, embeds, mask)


def build_core(backbone: Backbone) -> SharedCore:
    """The shared core for `backbone`'s family."""
    if backbone.family not in [e.name for e in CORES.entries()]:
        raise FPTError(
            f"serving many tasks on one core is implemented for the {', '.join(CORES.names())} family; "
            f"backbone {backbone.name!r} is {backbone.family!r}"
        )
    return CORES.build(backbone.family, backbone=backbone)


@CORES.register("bert", "BERT encoders (minilm, bert): per-task LayerNorms and position table")
class BertCore(SharedCore):
    backbone: BertBackbone

    def __init__(self, backbone: Backbone) -> None:
        super().__init__(backbone)
        emb, layers = backbone.model.embeddings, backbone.model.encoder.layer
        # Every LayerNorm in forward order (BertBackbone.encode's `norms`): embeddings, then per layer after attention
        # and after feed-forward.
        self.norms = [
            emb.LayerNorm,
            *[n for lay in layers for n in (lay.attention.output.LayerNorm, lay.output.LayerNorm)],
        ]

    def stacked(self) -> dict[str, list[nn.Parameter]]:
        return {
            "ln_weight": [n.weight for n in self.norms],  # per task (2L + 1, D)
            "ln_bias": [n.bias for n in self.norms],
            "position": [self.backbone.model.embeddings.position_embeddings.weight],  # per task (1, T_task, D)
        }

    ragged = ("position",)

    def trim(self, key: str, value: torch.Tensor, length: int) -> torch.Tensor:
        return value[:, :length] if key == "position" else value

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The training body (BertBackbone.encode) with each row's own norms and positions, mask with real tokens
        first. It runs once per length class (rows of up to 2^k tokens) on that class's padded grid, so a short
        task's rows do not pay for a long task's length."""
        weight, bias = self.stacks["ln_weight"], self.stacks["ln_bias"]  # (tasks, 2L + 1, D)
        table, start = self.stacks["position"][0], self.offsets["position"]  # (Σ T_task, D), (tasks,)
        size = torch.diff(start, append=start.new_tensor([len(table)]))  # (tasks,) T_task
        lengths = mask.sum(1)  # (B,)
        hidden = torch.zeros_like(embeds)  # (B, T, D)
        for members, t in length_classes(lengths):
            task = rows[members]  # (n,)
            # position of each cell; past its task's table (padding, in a class with longer tasks) its last row
            at = torch.minimum(torch.arange(t, device=mask.device), size[task, None] - 1)  # (n, t)
            norms = RowNorms(weight[task], bias[task])  # (n, 2L + 1, D) each
            positions = table[start[task, None] + at]  # (n, t, D)
            x, m = embeds[members, :t], mask[members, :t]  # (n, t, D), (n, t)
            hidden[members, :t] = self.backbone.encode(x, m, None, norms=norms, position_embeds=positions)
        return hidden


def length_classes(lengths: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """Rows grouped by length class (lengths 1, 2, 3-4, 5-8, ...: up to 2^k tokens): per class, its rows (n,) and
    its longest row's length."""
    kind = torch.ceil(torch.log2(lengths.float())).long()  # (B,) 1, 2, 3-4, 5-8, ... → 0, 1, 2, 3, ...
    members = [(kind == k).nonzero().squeeze(1) for k in kind.unique()]
    return [(m, int(lengths[m].max())) for m in members]
