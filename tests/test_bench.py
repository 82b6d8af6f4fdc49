"""`fpt bench` on a tiny BERT: the record's fields, the same-loss check, the targets and the rendered markdown."""

import json

import pytest
import torch

from fpt.cli import main
from fpt.errors import FPTError
from fpt.performance import ops
from fpt.performance.bench import ABLATIONS, ROWS, parse_shape
from fpt.performance.measure import TensorBytes

TESTED_ROWS = [r for r in ROWS if r != "reference-compiled"]  # compiling takes a minute; its skip path is tested

ROW_FIELDS = {
    "step_seconds",
    "samples_per_second",
    "tokens_per_second",
    "peak_bytes",
    "flops_per_step",
    "flops_per_second",
    "mfu",
    "trainable_params",
}


DEFAULT_HERE = frozenset(ops.PATHS) - {"onednn"}  # an AVX2 CPU's default: fpt-no-onednn is fpt, fpt-all runs


@pytest.fixture(scope="module")
def record(tiny_bert_dir, tmp_path_factory):
    torch.set_num_threads(1)
    before, ops.enabled = ops.enabled, DEFAULT_HERE
    folder = tmp_path_factory.mktemp("bench")
    args = ["bench", "--backbone", "bert", "--backbone-path", tiny_bert_dir, "--shape", "bit-memory=4x24"]
    args += [
        "--shape",
        "long=2x64",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--rows",
        ",".join(TESTED_ROWS),
        "--matmul",
        "256",  # the peak's matmul, small: a 2048² one in bf16 takes a minute where the CPU emulates bf16
    ]
    args += ["--json"]
    try:
        assert main([*args, str(folder / "bench.json")]) == 0
    finally:
        ops.enabled = before
    return folder / "bench.json"


def test_record_has_every_row_with_its_measurements(record):
    data = json.loads(record.read_text())
    assert data["format"] == "fpt-bench/1" and data["settings"]["device"] == "cpu"
    assert {"versions", "hardware", "git"} <= set(data["environment"])
    assert len(data["load_average"]["before"]) == 3 and "memory" in data["methods"]
    shares = data["cpu_time"]  # Linux: the machine's busy and stolen CPU time over the run
    assert 0 < shares["busy"] <= 1 and 0 <= shares["steal"] < 1
    assert data["environment"]["hardware"]["cpu_capability"] in ("DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX")
    assert [s["name"] for s in data["shapes"]] == ["bit-memory", "long"]
    for shape in data["shapes"]:
        assert list(shape["rows"]) == [r for r in TESTED_ROWS if r != "fpt-no-onednn"]
        assert shape["skipped"] == {"fpt-no-onednn": "the same paths as fpt's step here (attention, chunking, dropout)"}
        assert data["settings"]["fast_paths"] == sorted(DEFAULT_HERE)
        for row in shape["rows"].values():
            assert ROW_FIELDS <= set(row) and row["step_seconds"] > 0 and row["peak_bytes"] > 0
            assert len(row["step_seconds_all"]) == 2
        rows = shape["rows"]
        assert rows["full"]["trainable_params"] > 2 * rows["fpt"]["trainable_params"]
        assert rows["fpt"]["trainable_params"] == rows["reference"]["trainable_params"]
        assert rows["reference-eager"]["trainable_params"] == rows["reference"]["trainable_params"]
        for name in set(ABLATIONS) & set(rows):  # fpt's step with other hand-written paths: the same model and work
            assert rows[name]["trainable_params"] == rows["fpt"]["trainable_params"]
            assert (
                rows[name]["note"] == "every hand-written path on"
                if name == "fpt-all"
                else (rows[name]["note"].startswith("hand-written paths off: "))
            )
            assert shape["ratios"][name.replace("-", "_") + "_time"] > 0
        assert "fpt_vs_reference_eager_speed" in shape["ratios"] and "fpt_vs_reference_sdpa_speed" in shape["ratios"]
        best = max(rows[n]["samples_per_second"] for n in ("reference", "reference-eager"))
        assert shape["ratios"]["fpt_vs_reference_speed"] == rows["fpt"]["samples_per_second"] / best
        # a frozen body: the FPT step counts fewer FLOPs than full fine-tuning, more than inference
        assert rows["inference"]["flops_per_step"] < rows["fpt"]["flops_per_step"] < rows["full"]["flops_per_step"]
        assert rows["fpt"]["peak_bytes"] < rows["full"]["peak_bytes"]
        assert shape["matmul"]["flops_per_second"] > 0 and shape["matmul"]["n"] == 256  # --matmul 256
        assert {"fpt_vs_reference_speed", "fpt_vs_full_time", "fpt_vs_full_memory", "reservoir_vs_fpt_epoch"} <= set(
            shape["ratios"]
        )


def test_fpt_and_reference_agree_on_the_same_batch(record):
    for shape in json.loads(record.read_text())["shapes"]:
        check = shape["same_loss"]
        assert check["same"], check
        assert check["relative_difference"] < 1e-5 and check["input_grad_relative_difference"] < 1e-4


def test_targets_are_judged_from_the_numbers(record):
    targets = json.loads(record.read_text())["targets"]
    names = {t["target"] for t in targets}
    assert {"fpt_vs_reference_speed", "same_loss", "fpt_vs_full_time", "reservoir_vs_fpt_epoch"} <= names
    assert "fpt_mfu_gpu" not in names  # GPU only
    for t in targets:
        if t["target"] != "same_loss":
            assert t["met"] == (t["value"] >= t["bound"] if t["op"] == ">=" else t["value"] <= t["bound"])


def test_render_markdown(record, capsys):
    capsys.readouterr()
    assert main(["bench", "--render", str(record)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Benchmarks")
    assert "| bit-memory 4×24 | fpt |" in text and "| long 2×64 | reference |" in text
    assert "## Targets" in text and "Commit " in text and "Same numerics (long)" in text
    assert "Hand-written paths (long): step time with the path off ÷ fpt's step: dropout " in text
    assert "With every path on (those this CPU's default leaves off too): " in text
    assert "References (long): fpt's samples/s ÷ the reference's: SDPA " in text


def test_a_reference_that_does_not_compile_is_skipped_with_its_reason(tiny_bert_dir, monkeypatch):
    from fpt.performance.bench import BenchSettings, run_bench

    def no_compiler(model, *args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no C++ compiler")

        return fail

    monkeypatch.setattr(torch, "compile", no_compiler)
    settings = BenchSettings(backbone="bert", backbone_path=tiny_bert_dir, shapes=["long=2x16"], repeats=1, warmup=1,
                             threads=1, rows="fpt,reference,reference-compiled", matmul=256)  # fmt: skip
    (shape,) = run_bench(settings)["shapes"]
    assert list(shape["rows"]) == ["fpt", "reference"]
    assert shape["skipped"] == {"reference-compiled": "torch.compile failed here: RuntimeError: no C++ compiler"}


def test_llama_backbone_benches_against_its_reference(tiny_llama_dir):
    """A Llama folder: the reference is transformers' LlamaModel from it, trained by name (its RMSNorms) and fed the
    BOS token first as fpt's backbone does, so both steps compute the same loss; fpt's own rows run beside it."""
    from fpt.performance.bench import BenchSettings, run_bench

    rows = "fpt,reference,reference-eager,inference,fpt-plain"
    settings = BenchSettings(backbone="llama", backbone_path=tiny_llama_dir, shapes=["bit-memory=2x12"], repeats=1,
                             warmup=1, threads=1, rows=rows, matmul=256)  # fmt: skip
    (shape,) = run_bench(settings)["shapes"]
    assert list(shape["rows"]) == rows.split(",") and shape["skipped"] == {}
    assert shape["rows"]["fpt"]["trainable_params"] == shape["rows"]["reference"]["trainable_params"]
    check = shape["same_loss"]
    assert check["same"] and check["relative_difference"] < 1e-5 and check["input_grad_relative_difference"] < 1e-4
    assert shape["ratios"]["fpt_vs_reference_speed"] > 0


@pytest.mark.parametrize("native", [True, False], ids=["bf16-cpu", "emulating-cpu"])
def test_bf16_row_runs_beside_the_fp32_step_and_gives_its_speed_ratio(tiny_bert_dir, monkeypatch, native):
    """`fpt-bf16` is fpt's step under bf16 autocast beside the fp32 one; a bench that runs in bf16 skips it. On a CPU
    that only emulates bf16 its MFU is not given: an emulated matmul is no peak (and is not timed)."""
    from fpt import placement
    from fpt.performance.bench import BenchSettings, run_bench
    from fpt.performance.render import render_markdown, table

    monkeypatch.setattr(placement, "native_bf16", lambda: native)

    settings = BenchSettings(backbone="bert", backbone_path=tiny_bert_dir, shapes=["long=2x16"], repeats=1, warmup=1,
                             threads=1, rows="fpt,fpt-bf16", dtype="fp32", matmul=256)  # fmt: skip
    record = run_bench(settings)
    (shape,) = record["shapes"]
    assert list(shape["rows"]) == ["fpt", "fpt-bf16"]
    assert shape["rows"]["fpt-bf16"]["trainable_params"] == shape["rows"]["fpt"]["trainable_params"]
    ratio = shape["ratios"]["bf16_vs_fpt_speed"]
    assert ratio == pytest.approx(
        shape["rows"]["fpt-bf16"]["samples_per_second"] / shape["rows"]["fpt"]["samples_per_second"]
    )
    assert f"`fpt-bf16` samples/s ÷ `fpt`'s: {ratio:.2f}×." in render_markdown(record)
    if not native:
        assert "matmul_bf16" not in shape and shape["rows"]["fpt-bf16"]["mfu"] is None
        assert shape["rows"]["fpt"]["mfu"] == pytest.approx(
            shape["rows"]["fpt"]["flops_per_second"] / shape["matmul"]["flops_per_second"]
        )
        assert [line[-1] for line in table(record) if line[1] == "fpt-bf16"] == ["–"]
        return
    # each row's MFU is read against the matmul peak of its own dtype, both timed in the same rounds
    fp32_peak, bf16_peak = shape["matmul"]["flops_per_second"], shape["matmul_bf16"]["flops_per_second"]
    for name, peak in (("fpt", fp32_peak), ("fpt-bf16", bf16_peak)):
        row = shape["rows"][name]
        assert row["mfu"] == pytest.approx(row["flops_per_second"] / peak)
    assert shape["matmul_bf16"]["dtype"] == "bfloat16" and bf16_peak != fp32_peak
    assert any(line[1].startswith("matmul") and "bfloat16" in line[1] for line in table(record))
    (shape,) = run_bench(settings.model_copy(update={"dtype": "bf16"}))["shapes"]
    assert list(shape["rows"]) == ["fpt"] and "fpt-bf16" in shape["skipped"]


def test_render_refuses_other_json(tmp_path, capsys):
    (tmp_path / "x.json").write_text('{"task": "bit-xor"}')
    assert main(["bench", "--render", str(tmp_path / "x.json")]) == 2
    assert "not an fpt bench record" in capsys.readouterr().err


def test_parse_shape():
    assert parse_shape("long=8x512") == parse_shape("long=8X512")
    assert parse_shape("bit-memory=32x120").spec().input_dim == 50
    with pytest.raises(FPTError, match="NAME=BATCHxTOKENS"):
        parse_shape("32x120")


def test_tensor_bytes_counts_live_storages_and_their_peak():
    a = torch.zeros(1000)  # 4000 bytes, alive before
    with TensorBytes([a]) as memory:
        b = a + 1  # +4000
        c = b[:10]  # a view: nothing new
        del b, c  # freed
        d = torch.ones(500)  # +2000 after the free
    assert memory.peak == 8000 and memory.current == 6000
    del d


def test_cpu_shares_from_tick_counters():
    from fpt.results import cpu_shares

    # user nice system idle iowait irq softirq steal
    before, after = [100, 0, 50, 1000, 10, 0, 0, 5], [160, 0, 70, 1100, 10, 0, 0, 25]
    assert cpu_shares(before, after) == {"busy": 80 / 200, "steal": 20 / 200}
    assert cpu_shares(None, after) is None and cpu_shares(after, after) is None
