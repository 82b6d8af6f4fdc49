"""Load test for `fpt serve`: concurrent clients over ≥ 3 tasks on 127.0.0.1, with and without cross-task batching.

    python scripts/loadtest.py --patch a.fpt.safetensors --patch b.fpt.safetensors --patch c.fpt.safetensors \
        [--clients 16] [--duration 20] [--examples 1] [--out results/serve/loadtest.json]
    python scripts/loadtest.py --memory --patch a.fpt.safetensors     # memory for N = 1, 10, 100 tasks
    python scripts/loadtest.py --verify --patch a.fpt.safetensors ...  # reloaded and served = the trained runs

For each batching mode (cross-task: one forward pass for whatever tasks' requests have gathered; per-task: one pass
per task) it starts `fpt serve` on a free loopback port (a subprocess; a thread with --in-process), runs `clients`
concurrent clients for `duration` seconds, each sending one request at a time and cycling over the tasks with
`examples` random valid examples per request, and reports throughput, p50/p99 latency and errors (expected: zero).
Bounded: loopback only, at most 256 clients and 300 s per mode. Needs httpx (pip install -e '.[dev]').
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import quantiles
from typing import Any

import httpx

HOST = "127.0.0.1"  # loopback only, by design
MODES = ("cross-task", "per-task")
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def random_example(spec: dict[str, Any], rng: random.Random) -> list:
    """A valid example of the task's longest length: token ids 1..vocab-1, or features in [0, 1)."""
    if spec["input"] == "tokens":
        return [rng.randrange(1, spec["input_dim"]) for _ in range(spec["max_tokens"])]
    return [[round(rng.random(), 4) for _ in range(spec["input_dim"])] for _ in range(spec["max_tokens"])]


class Server:
    """`fpt serve` on a free loopback port, as a subprocess or (in_process) a uvicorn server on a thread."""

    def __init__(
        self,
        patches: list[str],
        batching: str,
        in_process: bool,
        max_wait_ms: float,
        threads: int,
        backbone_path: str | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.server = None
        if in_process:
            import uvicorn

            from fpt.shipping.serve import Settings, build, create_app

            core, _ = build(patches, backbone_path=backbone_path)
            app = create_app(core, Settings(batching=batching, max_wait_ms=max_wait_ms))
            self.server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=self.port, log_level="warning"))
            threading.Thread(target=self.server.run, daemon=True).start()
        else:
            args = [sys.executable, "-m", "fpt", "serve", "--host", HOST, "--port", str(self.port)]
            args += ["--batching", batching, "--max-wait-ms", str(max_wait_ms), "--threads", str(threads)]
            args += [a for p in patches for a in ("--patch", p)]
            args += ["--backbone-path", backbone_path] if backbone_path else []
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
            self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.wait_ready()

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"fpt serve exited: {self.proc.stdout.read() if self.proc.stdout else ''}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"fpt serve did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def load(url: str, clients: int, duration_s: float, examples: int, seed: int = 0) -> dict[str, Any]:
    """`clients` concurrent clients, one request in flight each, for `duration_s`; latencies of answered requests."""
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        tasks = (await http.get("/v1/tasks")).json()["tasks"]
        rng = random.Random(seed)
        bodies = {  # a few pre-encoded bodies per task, so the clients spend little CPU on JSON
            t["name"]: [
                json.dumps({"inputs": [random_example(t["task_spec"], rng) for _ in range(examples)]}).encode()
                for _ in range(8)
            ]
            for t in tasks
        }
        names = list(bodies)
        before = (await http.get("/healthz")).json()
        latencies: list[float] = []
        errors: list[str] = []
        deadline = time.perf_counter() + duration_s

        async def client(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                name = names[i % len(names)]
                body = bodies[name][i % 8]
                i += 1
                started = time.perf_counter()
                try:
                    reply = await http.post(
                        f"/v1/tasks/{name}/predict", content=body, headers={"content-type": "application/json"}
                    )
                    ok = reply.status_code == 200
                    if not ok:
                        errors.append(f"{reply.status_code} {reply.text[:200]}")
                except httpx.HTTPError as err:
                    ok = False
                    errors.append(repr(err))
                if ok:
                    latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        seconds = time.perf_counter() - started
        after = (await http.get("/healthz")).json()
    passes = after["forward_passes"] - before["forward_passes"]
    cuts = quantiles(latencies, n=100) if len(latencies) >= 2 else [latencies[0] if latencies else 0.0] * 99
    return {
        "tasks": names,
        "clients": clients,
        "examples_per_request": examples,
        "seconds": round(seconds, 2),
        "requests": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:3],
        "requests_per_s": round(len(latencies) / seconds, 1),
        "examples_per_s": round(len(latencies) * examples / seconds, 1),
        "p50_ms": round(1000 * cuts[49], 2),
        "p99_ms": round(1000 * cuts[98], 2),
        "forward_passes": passes,
        "requests_per_pass": round((after["requests"] - before["requests"]) / max(passes, 1), 2),
    }


def run(
    patches: list[str],
    clients: int = 16,
    duration_s: float = 20.0,
    examples: int = 1,
    modes: tuple[str, ...] = MODES,
    in_process: bool = False,
    max_wait_ms: float = 2.0,
    threads: int = 1,
    repeat: int = 1,
    backbone_path: str | None = None,
) -> dict[str, Any]:
    """Serve `patches` in each batching mode in turn (`repeat` rounds, the modes alternating so that a change in the
    machine's load hits both) and load it; returns the report, each mode's figures the round of median throughput."""
    if len(patches) < 3:
        raise SystemExit("give at least 3 --patch files: the test is about many tasks sharing one core")
    if not 1 <= clients <= 256 or not 0 < duration_s <= 300:
        raise SystemExit("bounded: 1..256 clients, 0..300 s per mode")
    report: dict[str, Any] = {"patches": patches, "max_wait_ms": max_wait_ms, "server_threads": threads, "modes": {}}
    rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for _ in range(repeat):
        for mode in modes:
            server = Server(patches, mode, in_process, max_wait_ms, threads, backbone_path)
            try:
                asyncio.run(load(server.url, clients, 0.5, examples, seed=1))  # warm-up, not counted
                rounds[mode].append(asyncio.run(load(server.url, clients, duration_s, examples)))
            finally:
                server.stop()
    for mode, results in rounds.items():
        ranked = sorted(results, key=lambda r: r["requests_per_s"])
        report["modes"][mode] = {
            **ranked[len(ranked) // 2],
            "rounds_requests_per_s": [r["requests_per_s"] for r in results],
        }
    if set(MODES) <= set(report["modes"]):
        cross, per = report["modes"]["cross-task"], report["modes"]["per-task"]
        report["throughput_gain"] = round(cross["requests_per_s"] / max(per["requests_per_s"], 1e-9), 2)
    return report


def rss_bytes() -> int:
    """This process's resident memory, after returning freed heap pages to the system (glibc) where possible."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def memory(
    patches: list[str], counts: tuple[int, ...] = (1, 10, 100), backbone_path: str | None = None
) -> dict[str, Any]:
    """Memory of one core serving N tasks (the given patches, cycled under new names, each read from its file as a
    server would): the tensors' bytes, and the growth of this process's resident memory."""
    import gc

    from fpt.shipping.multitask import build_core
    from fpt.shipping.patch import backbone_bytes_on_disk, read_patch
    from fpt.shipping.serve import load_backbone

    loaded = [read_patch(p) for p in patches]
    start = rss_bytes()
    core = build_core(load_backbone(None, backbone_path, loaded))
    gc.collect()
    with_backbone = rss_bytes()
    report: dict[str, Any] = {
        "backbone": core.backbone.name,
        "backbone_on_disk_bytes": backbone_bytes_on_disk(core.backbone.source),
        "patch_file_bytes": [p.nbytes for p in loaded],
        "rss_backbone_bytes": with_backbone - start,
        "counts": {},
    }
    for n in range(1, max(counts) + 1):
        path = patches[(n - 1) % len(patches)]
        core.add(f"t{n}", read_patch(path), path)
        if n in counts:
            gc.collect()
            mem = core.memory()
            report["counts"][n] = {
                **mem,
                "total_bytes": mem["backbone_bytes"] + mem["tasks_bytes"],
                "tasks_share": round(mem["tasks_bytes"] / (mem["backbone_bytes"] + mem["tasks_bytes"]), 4),
                "rss_bytes": rss_bytes() - start,
                "patch_files_bytes": sum(loaded[i % len(loaded)].nbytes for i in range(n)),
            }
    return report


def verify(patches: list[str], per_task: int = 64, backbone_path: str | None = None) -> dict[str, Any]:
    """Each patch reloaded alone (fpt.load_patch) reproduces its run's test metrics exactly, and the shared core (all
    the patches on one backbone, `per_task` test examples of every task in ONE mixed batch) predicts what the reloaded
    model predicts."""
    import torch

    import fpt
    from fpt.shipping.patch import backbone_bytes_on_disk
    from fpt.shipping.serve import build, parse_patch_arg
    from fpt.tasks import collate

    core, _ = build(patches, backbone_path=backbone_path)
    models, batch, report = {}, [], {}
    for text in patches:
        name, path = parse_patch_arg(text)
        model = models[name] = fpt.load_patch(path, backbone_path=backbone_path)
        cfg, metrics = model.patch.config, model.patch.metrics
        task = fpt.get_task(cfg.task, **cfg.task_args)
        test = fpt.evaluate(model, task.splits["test"], cfg.eval_batch_size, torch.device("cpu"))
        backbone = backbone_bytes_on_disk(model.patch.meta.get("backbone_source"))
        report[name] = {
            "patch_bytes": model.patch.nbytes,
            "backbone_on_disk_bytes": backbone,
            "patch_percent_of_backbone": round(100 * model.patch.nbytes / backbone, 3) if backbone else None,
            "test_accuracy": metrics["test_accuracy"],
            "reloaded_test_metrics_equal": test == {"accuracy": metrics["test_accuracy"], "loss": metrics["test_loss"]},
        }
        split = task.splits["test"]
        batch.append((name, [split[i][0] for i in range(min(per_task, len(split)))]))
    for (name, examples), served in zip(batch, core.predict(batch), strict=True):
        x, mask, _ = collate([(x, torch.zeros(1)) for x in examples])
        with torch.inference_mode():
            alone = models[name](x, mask)
        report[name] |= {
            "served_examples": len(examples),
            "served_predictions_equal": bool(torch.equal(served.argmax(-1), alone.argmax(-1))),
            "served_max_abs_logit_diff": float((served - alone).abs().max()),
        }
    return report


def environment() -> dict[str, Any]:
    """Versions, hardware and commit (fpt.results), plus the load the machine was under: figures are relative."""
    import torch

    from fpt.results import environment as fpt_environment

    return {**fpt_environment(torch.device("cpu")), "load_average_1_5_15": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patch", action="append", required=True, help="a task patch (≥ 3 for the load test)")
    parser.add_argument("--backbone-path", help="the backbone's folder, for a backbone the registry does not ship")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per batching mode")
    parser.add_argument("--examples", type=int, default=1, help="examples per request")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--repeat", type=int, default=1, help="rounds of all modes, alternating")
    parser.add_argument("--in-process", action="store_true", help="serve from a thread of this process")
    parser.add_argument("--memory", action="store_true", help="report memory for N = 1, 10, 100 tasks instead")
    parser.add_argument("--verify", action="store_true", help="check reloaded and served predictions instead")
    parser.add_argument("--out", help="also write the report as JSON here")
    args = parser.parse_args()
    if args.memory:
        report = memory(args.patch, backbone_path=args.backbone_path)
    elif args.verify:
        report = verify(args.patch, backbone_path=args.backbone_path)
    else:
        modes = tuple(m for m in args.modes.split(",") if m)
        report = run(args.patch, args.clients, args.duration, args.examples, modes, args.in_process,
                     args.max_wait_ms, args.threads, args.repeat, args.backbone_path)  # fmt: skip
    report["environment"] = environment()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
