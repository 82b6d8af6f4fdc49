"""fpt serve: one frozen core, many patches; cross-task batching gives the single-task answers; bad input is a 4xx."""

from __future__ import annotations

import asyncio
import builtins
import importlib.util
import io
import json
import os
import random
import socket
import sys
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

import fpt
from fpt.cli import main
from fpt.shipping.multitask import build_core
from fpt.shipping.patch import export, from_patch, read_patch, save_safetensors
from fpt.shipping.serve import Batcher, Settings, build, create_app
from fpt.tasks import collate

TOKEN = "s3cret-token"
TASKS = {  # served name → (task, task_args): features of width 1 and 4, and tokens
    "xor": ("bit-xor", {"train_size": 64, "val_size": 16, "test_size": 16}),
    "digits": ("digits", {}),
    "listops": ("listops", {"train_size": 32, "val_size": 8, "test_size": 8, "max_length": 60}),
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # a tiny model on a busy CPU runs ~10× faster on one thread than on two


@pytest.fixture(scope="module")
def patches(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    """Three short tiny runs (different seeds, input kinds and class counts), exported."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("patches")
    out = {}
    for seed, (name, (task, args)) in enumerate(TASKS.items()):
        cfg = fpt.TrainConfig(task=task, task_args=args, backbone="bert", backbone_path=tiny_bert_dir, steps=4,
                              eval_every=2, batch_size=8, seed=seed)  # fmt: skip
        fpt.train(cfg, out=folder / name, quiet=True)
        out[name], _ = export(folder / name, folder / f"{name}.fpt.safetensors")
    return out


@pytest.fixture(scope="module")
def examples() -> dict[str, list[torch.Tensor]]:
    return {name: [fpt.get_task(t, **a).splits["test"][i][0] for i in range(6)] for name, (t, a) in TASKS.items()}


@pytest.fixture(scope="module")
def client(patches):
    core, _ = build([f"{n}={p}" for n, p in patches.items()], backbone_path=backbone_of(patches))
    settings = Settings(allow_upload=True, upload_token=TOKEN, max_body_bytes=200_000, max_examples=64)
    with TestClient(create_app(core, settings)) as client:
        yield client


def backbone_of(patches: dict[str, Path]) -> str:
    """The tiny backbone's folder, which the caller names (a patch never chooses the path it is read from)."""
    return read_patch(next(iter(patches.values()))).config.backbone_path


def predict(client, name, inputs, **extra):
    return client.post(f"/v1/tasks/{name}/predict", json={"inputs": inputs, **extra})


def test_health_tasks_and_docs(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["tasks"] >= 3 and health["batching"] == "cross-task"
    listed = client.get("/v1/tasks").json()
    by_name = {t["name"]: t for t in listed["tasks"]}
    assert {"xor", "digits", "listops"} <= set(by_name)
    assert by_name["digits"]["task_spec"]["label_names"][:2] == ["0", "1"]
    assert by_name["xor"]["input"] == "10 tokens × 1"
    assert listed["backbone"]["backbone_bytes"] > 0 and client.get("/v1/tasks/listops").json()["task"] == "listops"
    schema = client.get("/openapi.json").json()
    assert "/v1/tasks/{name}/predict" in schema["paths"] and "PredictRequest" in schema["components"]["schemas"]


def test_served_predictions_match_the_reloaded_models(client, patches, examples):
    for name, xs in examples.items():
        body = [x.tolist() for x in xs]
        reply = predict(client, name, body, return_logits=True)
        assert reply.status_code == 200, reply.text
        x, mask, _ = collate([(x, torch.zeros(1)) for x in xs])
        with torch.no_grad():
            expected = from_patch(patches[name], backbone_path=backbone_of(patches))(x, mask)
        served = torch.tensor(reply.json()["logits"])
        assert torch.allclose(served, expected, atol=1e-5), name
        assert reply.json()["predictions"] == expected.argmax(-1).tolist()


def test_cross_task_rows_share_one_forward_and_keep_their_answers(patches, examples):
    """Requests for three tasks that arrive together: one forward pass (cross-task) or three (per-task), the same
    logits either way, and the same as each task alone."""
    core, _ = build([f"{n}={p}" for n, p in patches.items()], backbone_path=backbone_of(patches))
    alone = {name: core.predict([(name, xs)])[0] for name, xs in examples.items()}

    async def burst(batching: str):
        batcher = Batcher(core, Settings(batching=batching, max_wait_ms=200))
        worker = asyncio.create_task(batcher.run())
        await asyncio.sleep(0)
        outs = await asyncio.gather(*(batcher.predict(name, xs) for name, xs in examples.items()))
        worker.cancel()
        return dict(zip(examples, outs, strict=True)), batcher.stats

    for batching, passes in (("cross-task", 1), ("per-task", 3)):
        outs, stats = asyncio.run(burst(batching))
        assert stats == {"forward_passes": passes, "rows": 18, "requests": 3}
        for name in examples:
            assert torch.allclose(outs[name], alone[name], atol=1e-5)
            assert torch.equal(outs[name].argmax(-1), alone[name].argmax(-1))


def test_served_logits_are_each_tasks_trained_model(patches, examples, tmp_path):
    """What is served is what was trained: tasks of different lengths, each with layer norms and positions of its
    own (moved far apart here), in one predict call that mixes their rows (xor's in two length classes, one shared
    with digits), give each task's own FPT model's logits (eval mode, built from the same patch) to float rounding."""
    torch.manual_seed(0)
    noise = {"LayerNorm.weight": 0.3, "LayerNorm.bias": 0.3, "position_embeddings.weight": 0.05}
    moved = {}
    for name, path in patches.items():
        patch = read_patch(path)
        tensors = dict(patch.tensors)
        for end, scale in noise.items():
            keys = [k for k in tensors if k.endswith(end)]
            assert keys, (name, end)  # the patch trains norms and positions
            tensors |= {k: tensors[k] + scale * torch.randn_like(tensors[k]) for k in keys}
        moved[name] = tmp_path / f"{name}.fpt.safetensors"
        save_safetensors(moved[name], tensors, patch.meta)
    core, _ = build([f"{n}={p}" for n, p in moved.items()], backbone_path=backbone_of(patches))
    inputs = {**examples, "xor": [*examples["xor"], examples["xor"][0][:7], examples["xor"][1][:5]]}
    served = dict(zip(inputs, core.predict(list(inputs.items())), strict=True))
    for name, xs in inputs.items():
        x, mask, _ = collate([(x, torch.zeros(1)) for x in xs])
        with torch.no_grad():
            trained = from_patch(moved[name], backbone_path=backbone_of(patches))(x, mask)
        assert (served[name] - trained).abs().max() <= 1e-6, name


def test_prompt_tuned_patches_serve_beside_the_others(patches, examples, tiny_bert_dir, tmp_path):
    """Prompt tuning's tokens are per task and touch nothing shared: such a patch serves on the same core, its rows
    mixed with other tasks' in one pass, and gives its own trained model's logits; a LoRA patch is refused."""
    runs = {}
    for method, extra in (("prompt", {"prompt_tokens": 3}), ("lora", {})):
        cfg = fpt.TrainConfig(task="bit-xor", task_args=TASKS["xor"][1], backbone="bert", backbone_path=tiny_bert_dir,
                              steps=4, eval_every=2, batch_size=8, seed=7, method=method, **extra)  # fmt: skip
        fpt.train(cfg, out=tmp_path / method, quiet=True)
        runs[method], _ = export(tmp_path / method, tmp_path / f"{method}.fpt.safetensors")
    core, _ = build(
        [f"{n}={p}" for n, p in {**patches, "xor-prompt": runs["prompt"]}.items()], backbone_path=tiny_bert_dir
    )
    inputs = {"xor-prompt": [*examples["xor"], examples["xor"][0][:6]], "digits": examples["digits"]}
    served = dict(zip(inputs, core.predict(list(inputs.items())), strict=True))
    for name, xs in inputs.items():
        x, mask, _ = collate([(x, torch.zeros(1)) for x in xs])
        path = runs["prompt"] if name == "xor-prompt" else patches[name]
        with torch.no_grad():
            trained = from_patch(path, backbone_path=tiny_bert_dir)(x, mask)
        assert (served[name] - trained).abs().max() <= 1e-5, name
    with pytest.raises(fpt.FPTError, match="trains input, output, adapter; a shared frozen core serves"):
        build([f"xor-lora={runs['lora']}"], backbone_path=tiny_bert_dir)


def bad_requests(examples) -> list[tuple[str, str, bytes | str, dict]]:
    """(why, task, body, headers) of requests that must get a 4xx."""
    xor = [x.tolist() for x in examples["xor"]]
    listops = [x.tolist() for x in examples["listops"]]
    j = json.dumps
    cases = [
        ("malformed JSON", "xor", '{"inputs": [[[1.0]]', {}),
        ("not JSON at all", "xor", b"\xff\xfe\x00garbage", {}),
        ("empty body", "xor", "", {}),
        ("JSON null", "xor", "null", {}),
        ("a list, not an object", "xor", j(xor), {}),
        ("no inputs", "xor", "{}", {}),
        ("no examples", "xor", j({"inputs": []}), {}),
        ("unknown field", "xor", j({"inputs": xor, "temperature": 2}), {}),
        ("NaN literal", "xor", '{"inputs": [[[NaN]]]}', {}),
        ("Infinity literal", "xor", '{"inputs": [[[Infinity], [1], [0], [1], [0]]]}', {}),
        ("overflowing float", "xor", '{"inputs": [[[1e999], [1], [0], [1], [0]]]}', {}),
        ("strings", "xor", j({"inputs": [[["1"]] * 10]}), {}),
        ("booleans", "xor", j({"inputs": [[[True]] * 10]}), {}),
        ("nulls", "xor", j({"inputs": [[[None]] * 10]}), {}),
        ("wrong width", "xor", j({"inputs": [[[0.0, 1.0]] * 10]}), {}),
        ("ragged rows", "digits", j({"inputs": [[[0.0] * 4] * 15 + [[0.0] * 3]]}), {}),
        ("too long", "xor", j({"inputs": [[[0.0]] * 11]}), {}),
        ("too short to read out", "xor", j({"inputs": [[[0.0]] * 3]}), {}),
        ("empty example", "xor", j({"inputs": [[]]}), {}),
        ("features to a tokens task", "listops", j({"inputs": [[[1.0]] * 5]}), {}),
        ("tokens to a features task", "xor", j({"inputs": [[1] * 10]}), {}),
        ("token id 0 (padding)", "listops", j({"inputs": [[0] + listops[0][1:]]}), {}),
        ("token id past the vocabulary", "listops", j({"inputs": [[999]]}), {}),
        ("negative token id", "listops", j({"inputs": [[-1, 2, 3]]}), {}),
        ("huge token id", "listops", j({"inputs": [[2**70]]}), {}),
        ("float token ids", "listops", j({"inputs": [[1.5, 2.0]]}), {}),
        ("too many examples", "xor", j({"inputs": xor[:1] * 65}), {}),
        ("body over the limit", "xor", j({"inputs": xor[:1] * 10_000}), {}),
        ("deeply nested", "xor", "[" * 100_000 + "]" * 100_000, {}),
        ("unknown task", "nope", j({"inputs": xor}), {}),
        ("unknown task, bad body", "nope", "{", {}),
        ("path-like task name", "..%2F..%2Fetc%2Fpasswd", j({"inputs": xor}), {}),
        ("form content type", "xor", "inputs=1", {"content-type": "application/x-www-form-urlencoded"}),
    ]
    return cases


def test_bad_requests_are_4xx_and_the_server_keeps_serving(client, examples):
    good = {"inputs": [x.tolist() for x in examples["xor"]]}
    for why, task, body, headers in bad_requests(examples):
        reply = client.post(f"/v1/tasks/{task}/predict", content=body, headers={"content-type": "application/json",
                                                                                  **headers})  # fmt: skip
        assert 400 <= reply.status_code < 500, (why, reply.status_code, reply.text[:300])
        detail = reply.json()["detail"]
        assert isinstance(detail, str) and 0 < len(detail) < 600, (why, detail)
        assert client.post("/v1/tasks/xor/predict", json=good).status_code == 200, why
    assert "unknown task 'nope'; tasks: xor, digits, listops" in predict(client, "nope", good["inputs"]).text
    assert "inputs[0]: expected a list of 5..10 tokens" in predict(client, "xor", [[[0.0]] * 3]).text
    assert "token ids must be in 1..17" in predict(client, "listops", [[999]]).text
    assert "malformed JSON" in client.post("/v1/tasks/xor/predict", content="{", headers={
        "content-type": "application/json"}).text  # fmt: skip


def test_fuzzed_bodies_never_get_a_5xx(client, examples):
    rng = random.Random(0)
    valid = json.dumps({"inputs": [x.tolist() for x in examples["digits"][:2]]})
    alphabet = '[]{},:."0123456789-eE+ aNfItrulsn\\'
    statuses = set()
    for _ in range(300):
        body = list(valid)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(body))
            op = rng.random()
            if op < 0.4:
                body[i] = rng.choice(alphabet)
            elif op < 0.7:
                del body[i]
            else:
                body.insert(i, rng.choice(alphabet) * rng.randint(1, 3))
        reply = client.post(f"/v1/tasks/{rng.choice(list(TASKS))}/predict", content="".join(body),
                            headers={"content-type": "application/json"})  # fmt: skip
        statuses.add(reply.status_code)
        assert reply.status_code < 500, ("".join(body), reply.text)
    assert statuses - {200} and statuses <= {200, 400, 404, 413, 422}


def test_requests_read_and_write_no_files(client, examples, monkeypatch):
    opened: list[str] = []
    for module, name in ((builtins, "open"), (io, "open"), (os, "open")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda f, *a, _o=original, **k: opened.append(str(f)) or _o(f, *a, **k))
    Path(__file__).read_bytes()
    assert opened == [__file__]  # the spies see file opens
    opened.clear()
    for _, task, body, headers in bad_requests(examples):
        client.post(f"/v1/tasks/{task}/predict", content=body, headers={"content-type": "application/json", **headers})
    client.post("/v1/tasks/xor/predict", json={"inputs": [x.tolist() for x in examples["xor"]]})
    client.get("/v1/tasks/..%2F..%2Fetc%2Fpasswd")
    monkeypatch.undo()
    assert opened == []


def test_upload_is_off_by_default_and_needs_the_token(patches, tmp_path, tiny_bert_dir):
    core, _ = build([f"xor={patches['xor']}"], backbone_path=backbone_of(patches))
    with TestClient(create_app(core)) as closed:
        assert closed.post("/v1/tasks", content=patches["digits"].read_bytes()).status_code == 403
    settings = Settings(allow_upload=True, upload_token=TOKEN, max_upload_bytes=1 << 20)
    with TestClient(create_app(core, settings)) as client:
        data = patches["digits"].read_bytes()
        assert client.post("/v1/tasks?name=d", content=data).status_code == 401
        wrong = {"authorization": "Bearer nope"}
        assert client.post("/v1/tasks?name=d", content=data, headers=wrong).status_code == 401
        auth = {"authorization": f"Bearer {TOKEN}"}
        reply = client.post("/v1/tasks?name=d", content=data, headers=auth)
        assert reply.status_code == 201, reply.text
        assert predict(client, "d", [[[0.5] * 4] * 16]).status_code == 200
        assert client.post("/v1/tasks?name=d", content=data, headers=auth).status_code == 409
        for bad in (data[:100], b"junk", (Path(tiny_bert_dir) / "model.safetensors").read_bytes()):
            reply = client.post("/v1/tasks?name=e", content=bad, headers=auth)
            assert reply.status_code == 422 and "uploaded patch" in reply.json()["detail"], reply.text
        assert client.post("/v1/tasks?name=..%2Fx", content=data, headers=auth).status_code == 422
        assert client.post("/v1/tasks?name=big", content=b"0" * (2 << 20), headers=auth).status_code == 413
        assert client.get("/healthz").json()["tasks"] == 2


def test_patch_for_another_backbone_is_refused(patches, tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(1)
    config = BertConfig.from_pretrained(read_patch(patches["xor"]).config.backbone_path)
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "other")
    with pytest.raises(fpt.FPTError, match="does not fit this backbone"):
        build([str(patches["xor"])], backbone_path=str(tmp_path / "other"))


def test_memory_is_one_backbone_plus_the_patches(patches):
    patch = read_patch(patches["digits"])
    core = build_core(fpt.get_backbone("bert", path=patch.config.backbone_path))
    sizes = {}
    for n in range(1, 11):
        core.add(f"t{n}", patch, "digits")
        sizes[n] = core.memory()
    assert sizes[1]["backbone_bytes"] == sizes[10]["backbone_bytes"]
    assert sizes[10]["tasks_bytes"] == 10 * sizes[1]["tasks_bytes"]
    assert sizes[1]["tasks_bytes"] <= sum(t.numel() * 4 for t in patch.tensors.values())  # positions trimmed


def test_serve_cli_errors_are_one_line(patches, capsys, monkeypatch):
    assert main(["serve"]) == 2
    assert "give at least one --patch" in capsys.readouterr().err
    assert main(["serve", "--patch", "missing.fpt.safetensors"]) == 2
    assert "file not found: missing.fpt.safetensors" in capsys.readouterr().err
    monkeypatch.delenv("FPT_SERVE_TOKEN", raising=False)
    assert main(["serve", "--patch", str(patches["xor"]), "--allow-upload"]) == 2
    assert "FPT_SERVE_TOKEN" in capsys.readouterr().err


@pytest.fixture(scope="module")
def loadtest():
    spec = importlib.util.spec_from_file_location("loadtest", Path(__file__).parents[1] / "scripts" / "loadtest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["loadtest"] = module
    spec.loader.exec_module(module)
    return module


def raw_http(port: int, request: bytes) -> int:
    """Send bytes as they are (no client library fixing them up); the status code of the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        reply = b""
        while b"\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return int(reply.split()[1])


def test_live_server_refuses_lying_and_oversized_bodies(patches, loadtest, examples):
    server = loadtest.Server([str(p) for p in patches.values()], "cross-task", True, 2.0, 1, backbone_of(patches))
    try:
        body = json.dumps({"inputs": [x.tolist() for x in examples["xor"]]}).encode()
        head = b"POST /v1/tasks/xor/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        assert raw_http(server.port, head + b"Content-Length: %d\r\n\r\n" % len(body) + body) == 200
        assert raw_http(server.port, head + b"Content-Length: 5\r\n\r\n" + body) == 400  # cut short: bad JSON
        assert raw_http(server.port, head + b"Content-Length: many\r\n\r\n" + body) == 400
        big = b"[" * (5 << 20)
        chunked = head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(big) + big + b"\r\n0\r\n\r\n"
        assert raw_http(server.port, chunked) == 413  # no Content-Length: counted as it streams in
        assert raw_http(server.port, head + b"Content-Length: 99999999\r\n\r\n") == 413
        assert raw_http(server.port, head + b"Content-Length: %d\r\n\r\n" % len(body) + body) == 200
    finally:
        server.stop()


def test_load_test_script_runs_clean(patches, loadtest):
    """scripts/loadtest.py against a live uvicorn server on 127.0.0.1 (in this process), both modes, briefly."""
    report = loadtest.run(
        [str(p) for p in patches.values()],
        clients=6,
        duration_s=1.5,
        in_process=True,
        backbone_path=backbone_of(patches),
    )
    for mode in ("cross-task", "per-task"):
        stats = report["modes"][mode]
        assert stats["errors"] == 0 and stats["requests"] > 0 and stats["p99_ms"] >= stats["p50_ms"] > 0, stats


def test_serve_options_set_the_servers_batching_and_limits(patches, examples):
    """`fpt serve`'s options are ServeSettings, what create_app reads: batching, examples per request, body size."""
    from fpt.cli import build_parser, options_from_args
    from fpt.shipping.serve import ServeSettings

    args = ["serve", "--patch", f"x={patches['xor']}", "--batching", "per-task", "--max-examples", "2"]
    settings = options_from_args(ServeSettings, build_parser("serve").parse_args([*args, "--max-body-mb", "0.001"]))
    assert settings.patches == [f"x={patches['xor']}"] and settings.max_body_bytes == int(0.001 * 2**20)
    core, _ = build(settings.patches, backbone_path=backbone_of(patches))
    with TestClient(create_app(core, settings)) as client:
        assert client.get("/healthz").json()["batching"] == "per-task"
        assert predict(client, "x", [x.tolist() for x in examples["xor"][:2]]).status_code == 200
        reply = predict(client, "x", [x.tolist() for x in examples["xor"][:3]])
        assert reply.status_code == 413 and "3 examples in one request; at most 2" in reply.text
        reply = predict(client, "x", [[[0.25]] * 200])
        assert reply.status_code == 413 and f"request body over {settings.max_body_bytes:,} bytes" in reply.text
