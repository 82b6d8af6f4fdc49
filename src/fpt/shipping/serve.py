"""`fpt serve`: one frozen backbone in memory, many task patches, one HTTP API (FastAPI + uvicorn).

    fpt serve --backbone minilm --patch xor.fpt.safetensors --patch digits.fpt.safetensors

Requests wait in a micro-batching queue for at most `max_wait_ms`; what has gathered then goes through the shared core
as one forward pass (fpt.shipping.multitask), whatever the tasks (`--batching cross-task`, the default), or as one
pass per task (`--batching per-task`, the baseline the load test compares against). Bad requests get a 4xx that says
what is wrong, and the server goes on serving; requests never name files, so nothing but the given patch and backbone
files is read, and nothing is written. Adding a patch at run time (`POST /v1/tasks`, the file as the body) is off
unless `--allow-upload` is given and FPT_SERVE_TOKEN is set; it then needs `Authorization: Bearer $FPT_SERVE_TOKEN`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from fpt.backbones import Backbone, get_backbone
from fpt.config import format_validation_error
from fpt.errors import FPTError
from fpt.shipping.multitask import SharedCore, build_core, check_examples, check_outputs
from fpt.shipping.patch import PATCH_SUFFIX, Patch, backbone_source, parse_patch, read_patch
from fpt.version import __version__

Batching = Literal["cross-task", "per-task"]
UPLOAD_TOKEN_ENV = "FPT_SERVE_TOKEN"

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
FeatureExample = Annotated[list[list[FiniteFloat]], Field(min_length=1, description="(T, d): T tokens of d numbers")]
TokenExample = Annotated[list[StrictInt], Field(min_length=1, description="(T,): T token ids, 1..vocab-1")]


class PredictRequest(BaseModel):
    """A batch of examples for one task: each a (T, d) list of numbers (features tasks: d = the task's input_dim) or a
    list of T token ids (tokens tasks: ids 1..vocab-1; 0 is padding). T may vary between examples, up to the task's
    longest input (see GET /v1/tasks: task_spec.max_tokens)."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[FeatureExample] | list[TokenExample] = Field(min_length=1)
    return_logits: bool = Field(False, description="also return the logits (n, K, classes)")


class PredictResponse(BaseModel):
    task: str
    predictions: list[list[int]] = Field(description="(n, K): the predicted class of each of the K outputs")
    labels: list[list[str]] | None = Field(None, description="(n, K): class names, when the task has them")
    logits: list[list[list[float]]] | None = None


class ServeSettings(BaseModel):
    """What `fpt serve` serves and how (the options of `fpt serve`); create_app reads the batching and limits."""

    model_config = ConfigDict(extra="forbid")

    patches: list[str] = Field(
        default_factory=list,
        description="a task patch (repeat); NAME defaults to the file name without .fpt.safetensors",
        json_schema_extra={"flag": "--patch", "metavar": "[NAME=]FILE"},
    )
    backbone: str | None = Field(None, description="backbone name (default: the patches')")
    backbone_path: str | None = Field(
        None, description="backbone folder (default: the first patch's)", json_schema_extra={"metavar": "DIR"}
    )
    host: str = Field("127.0.0.1", description="address to listen on; 127.0.0.1 is this machine only")
    port: int = Field(8000, ge=0, le=65535, description="port")
    batching: Batching = Field("cross-task", description="one forward pass for all tasks' requests, or one per task")
    max_wait_ms: float = Field(2.0, ge=0, description="how long the first request of a batch waits for company")
    max_batch_rows: int = Field(64, gt=0, description="examples per forward pass (a request is never split)")
    max_examples: int = Field(256, gt=0, description="examples per request")
    max_body_mb: float = Field(4.0, gt=0, description="largest predict request body, in MiB")
    max_upload_mb: float = Field(64.0, gt=0, description="largest patch uploaded to POST /v1/tasks, in MiB")
    allow_upload: bool = Field(False, description=f"enable POST /v1/tasks (token: ${UPLOAD_TOKEN_ENV})")
    threads: int | None = Field(None, gt=0, description="CPU threads for torch")
    upload_token: str | None = Field(
        None,
        repr=False,
        exclude=True,
        description=f"the bearer token of POST /v1/tasks; fpt serve reads it from ${UPLOAD_TOKEN_ENV}",
        json_schema_extra={"cli": False},  # a secret on the command line would show in ps
    )

    @model_validator(mode="before")
    @classmethod
    def _limits_in_bytes(cls, values: Any) -> Any:
        """max_body_bytes / max_upload_bytes (the unit the server counts in) set the MiB limits too."""
        if isinstance(values, dict) and {"max_body_bytes", "max_upload_bytes"} & set(values):
            values = dict(values)
            for what in ("body", "upload"):
                if f"max_{what}_bytes" in values:
                    values[f"max_{what}_mb"] = values.pop(f"max_{what}_bytes") / 2**20
        return values

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


Settings = ServeSettings  # the name scripts/loadtest.py and the tests import


@dataclass
class Job:
    task: str
    examples: list[torch.Tensor]
    future: asyncio.Future


@dataclass
class Batcher:
    """The micro-batching queue: gathers requests for up to `max_wait_ms` (or `max_batch_rows` examples) and runs
    them through the core on one worker thread, all tasks together or one task at a time."""

    core: SharedCore
    settings: ServeSettings
    queue: asyncio.Queue | None = None  # made by run(), in the server's event loop
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="fpt-core"))
    stats: dict[str, int] = field(default_factory=lambda: {"forward_passes": 0, "rows": 0, "requests": 0})

    async def predict(self, task: str, examples: list[torch.Tensor]) -> torch.Tensor:
        if self.queue is None:
            raise RuntimeError("the batching worker is not running")
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(Job(task, examples, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.queue = asyncio.Queue()
        while True:
            jobs = [await self.queue.get()]
            rows = len(jobs[0].examples)
            deadline = loop.time() + self.settings.max_wait_ms / 1000
            while rows < self.settings.max_batch_rows:
                wait = deadline - loop.time()
                try:
                    job = await asyncio.wait_for(self.queue.get(), wait) if wait > 0 else self.queue.get_nowait()
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                jobs.append(job)
                rows += len(job.examples)
            jobs = [j for j in jobs if not j.future.done()]  # the client went away
            if self.settings.batching == "cross-task":
                groups = [jobs]
            else:
                by_task: dict[str, list[Job]] = defaultdict(list)
                for job in jobs:
                    by_task[job.task].append(job)
                groups = list(by_task.values())
            for group in groups:
                await self.forward(group)

    async def forward(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.core.predict, [(j.task, j.examples) for j in jobs]
            )
        except Exception as err:  # a bug, not bad input (that was refused before queueing): answer 500, keep serving
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(err)
            return
        self.stats["forward_passes"] += 1
        self.stats["rows"] += sum(len(j.examples) for j in jobs)
        self.stats["requests"] += len(jobs)
        for job, out in zip(jobs, outputs, strict=True):
            if not job.future.done():
                job.future.set_result(out)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def describe_validation(exc: RequestValidationError, input_kind: str | None = None) -> str:
    """FastAPI's validation errors as one line. Of the two example forms (features: lists of floats; tokens: lists of
    ints), only the errors against the task's own form are reported when the task is known."""
    errors = [{**e, "loc": tuple(e["loc"])} for e in exc.errors()]
    for e in errors:
        e["loc"] = e["loc"][1:] if e["loc"][:1] == ("body",) else e["loc"]  # where FastAPI found it, not a key
    branch = {"features": "float", "tokens": "int]"}.get(input_kind or "")
    if branch and any(branch in str(p) for e in errors for p in e["loc"]):
        errors = [
            e for e in errors if not any("[" in str(p) for p in e["loc"]) or any(branch in str(p) for p in e["loc"])
        ]
    return format_validation_error(errors, PredictRequest, kind="request body")


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit (413) by Content-Length, or as they stream in."""

    def __init__(self, app, settings: ServeSettings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/tasks"
        limit = self.settings.max_upload_bytes if upload else self.settings.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limit:
            message = f"request body over {limit:,} bytes" if length.isdigit() else "bad Content-Length"
            return await error(413 if length.isdigit() else 400, message)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, f"request body over {limit:,} bytes")
            return message

        await self.app(scope, limited_receive, send)


def create_app(core: SharedCore, settings: ServeSettings | None = None) -> FastAPI:
    """The HTTP API over a shared core that already holds its tasks."""
    settings = settings or ServeSettings()
    batcher = Batcher(core, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        worker = asyncio.create_task(batcher.run())
        await asyncio.sleep(0)  # let the worker make its queue
        yield
        worker.cancel()
        batcher.queue = None

    app = FastAPI(
        title="fpt serve",
        description="Frozen Pretrained Transformer tasks served from one shared frozen backbone. "
        "Each task is a patch of its trained tensors; requests for different tasks share forward passes.",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.core, app.state.batcher, app.state.settings = core, batcher, settings
    app.add_middleware(BodyLimit, settings=settings)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        name = request.path_params.get("name")
        if name is not None and name not in core.tasks:
            return error(404, unknown_task(core, name))
        message = describe_validation(exc, core.tasks[name].spec.input if name is not None else None)
        return error(400 if message.startswith("malformed JSON") else 422, message)

    add_read_routes(app, core, batcher, settings)
    add_predict_route(app, core, batcher, settings)
    add_upload_route(app, core, batcher, settings)
    return app


def unknown_task(core: SharedCore, name: str) -> str:
    return f"unknown task {name!r}; tasks: {', '.join(core.tasks) or 'none'}"


def task_or_404(core: SharedCore, name: str):
    task = core.tasks.get(name)
    if task is None:
        raise HTTPException(404, unknown_task(core, name))
    return task


def add_read_routes(app: FastAPI, core: SharedCore, batcher: Batcher, settings: ServeSettings) -> None:
    """Liveness and the tasks served."""
    started = time.time()

    @app.get("/healthz", summary="liveness: the backbone is loaded and the batching worker runs")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "backbone": core.backbone.name,
            "tasks": len(core.tasks),
            "batching": settings.batching,
            "uptime_s": round(time.time() - started, 1),
            **batcher.stats,
        }

    @app.get("/v1/tasks", summary="the tasks served: spec (input shape, classes, labels), trained groups, metrics")
    async def list_tasks() -> dict[str, Any]:
        return {
            "backbone": {"name": core.backbone.name, "source": core.backbone.source, **core.memory()},
            "tasks": [t.summary() for t in core.tasks.values()],
        }

    @app.get("/v1/tasks/{name}", summary="one task")
    async def get_task(name: str) -> dict[str, Any]:
        return task_or_404(core, name).summary()


def add_predict_route(app: FastAPI, core: SharedCore, batcher: Batcher, settings: ServeSettings) -> None:
    """Predictions: requests for any task join the batcher's shared forward passes."""

    @app.post("/v1/tasks/{name}/predict", response_model=PredictResponse, summary="predict a batch of examples")
    async def predict(name: str, body: PredictRequest) -> dict[str, Any]:
        task = task_or_404(core, name)
        if len(body.inputs) > settings.max_examples:
            raise HTTPException(413, f"{len(body.inputs)} examples in one request; at most {settings.max_examples}")
        try:
            examples = check_examples(task.spec, body.inputs, task.readout)
        except FPTError as err:
            raise HTTPException(422, str(err)) from None
        logits = await batcher.predict(name, examples)  # (n, K, C)
        try:
            check_outputs(logits)
        except FPTError as err:
            raise HTTPException(422, str(err)) from None
        classes = logits.argmax(-1).tolist()
        names = task.spec.label_names
        return {
            "task": name,
            "predictions": classes,
            "labels": [[names[c] for c in row] for row in classes] if names else None,
            "logits": logits.tolist() if body.return_logits else None,
        }


def add_upload_route(app: FastAPI, core: SharedCore, batcher: Batcher, settings: ServeSettings) -> None:
    """Adding a task patch at run time: off unless --allow-upload, and only with the bearer token."""

    @app.post(
        "/v1/tasks",
        status_code=201,
        summary="add a task patch at run time (off unless --allow-upload; needs the bearer token)",
        openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}},
    )
    async def add_task(request: Request, name: str | None = None) -> dict[str, Any]:
        if not (settings.allow_upload and settings.upload_token):
            raise HTTPException(403, "adding tasks at run time is off (fpt serve --allow-upload with FPT_SERVE_TOKEN)")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), settings.upload_token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        data = await request.body()
        try:
            patch = parse_patch(data, "uploaded patch")
            name = name or re.sub(r"[^A-Za-z0-9._-]", "-", patch.spec.name)
            task = await asyncio.get_running_loop().run_in_executor(
                batcher.executor, core.add, name, patch, "uploaded patch"
            )
        except FPTError as err:
            status = 409 if "already served" in str(err) else 422
            raise HTTPException(status, str(err)) from None
        return task.summary()


def parse_patch_arg(text: str) -> tuple[str, Path]:
    """`NAME=PATH` or `PATH` (the name is then the file name without .fpt.safetensors)."""
    name, sep, path = text.partition("=")
    if not sep or "/" in name or name.endswith(".safetensors"):
        path = text
        name = Path(text).name.removesuffix(PATCH_SUFFIX).removesuffix(".safetensors")
    return name, Path(path)


def load_backbone(name: str | None, path: str | None, patches: list[Patch], where: str = "") -> Backbone:
    """The backbone to share: `name` (default: the patches' backbone) from `path` (default: the registry's; a patch
    never chooses a path to read), built as the patches' init."""
    first = patches[0].config if patches else None
    name = name or (first.backbone if first else "minilm")
    same = first is not None and first.backbone == name
    if same and path is None:
        backbone_source(patches[0], None, where or "the first patch")
    init = first.init if same else "pretrained"
    with torch.random.fork_rng(devices=[]):  # a random-init backbone is rebuilt from its run's seed, as fpt.train did
        torch.manual_seed(first.seed if same else 0)
        return get_backbone(name, init, path, dropout=0.0)


def build(
    patch_args: list[str], backbone: str | None = None, backbone_path: str | None = None
) -> tuple[SharedCore, list[str]]:
    """Load the backbone once and every patch onto it; returns the core and one line per task for the log."""
    named = [parse_patch_arg(p) for p in patch_args]
    patches = [read_patch(path) for _, path in named]
    core = build_core(load_backbone(backbone, backbone_path, patches, str(named[0][1]) if named else ""))
    lines = []
    for (name, path), patch in zip(named, patches, strict=True):
        core.add(name, patch, str(path))
        metric = patch.metrics.get("test_accuracy")
        lines.append(
            f"  {name}: {patch.spec.name}, {patch.spec.shape()}, {patch.spec.num_classes} classes, "
            f"{patch.nbytes / 1024:,.1f} KiB" + (f", test accuracy {metric:.4f}" if metric is not None else "")
        )
    return core, lines


def serve(settings: ServeSettings) -> None:
    """Run the server until interrupted."""
    import uvicorn

    if not settings.patches and not settings.allow_upload:
        raise FPTError("give at least one --patch FILE (or --allow-upload to add tasks at run time)")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if settings.allow_upload:
        token = os.environ.get(UPLOAD_TOKEN_ENV) or None
        if not token:
            raise FPTError(f"--allow-upload needs a token in the environment variable {UPLOAD_TOKEN_ENV}")
        settings = settings.model_copy(update={"upload_token": token})
    core, lines = build(settings.patches, settings.backbone, settings.backbone_path)
    memory = core.memory()
    print(
        f"fpt serve: backbone {core.backbone.name} ({core.backbone.source}), {memory['backbone_bytes'] / 2**20:,.1f} "
        f"MiB; {len(core.tasks)} task(s), {memory['tasks_bytes'] / 2**10:,.1f} KiB; batching {settings.batching}\n"
        + "\n".join(lines)
        + f"\nhttp://{settings.host}:{settings.port}/v1/tasks (API docs: /docs, /openapi.json)",
        flush=True,
    )
    uvicorn.run(create_app(core, settings), host=settings.host, port=settings.port, log_level="warning")
