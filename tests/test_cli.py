import json
import re
import subprocess
import sys

import pytest

from fpt.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fpt", *args], capture_output=True, text=True, timeout=120)


def test_unknown_task_is_one_line_listing_the_tasks():
    proc = run_cli("train", "--task", "nope")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "unknown task 'nope'" in lines[0] and "bit-xor" in lines[0] and "digits" in lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--backbone", "nope"], "unknown backbone 'nope'; choose from: minilm"),
        (["train", "--train", "input,attn"], "unknown parameter group 'attn'"),
        (["train", "--init", "imagenet"], "init: Input should be 'pretrained' or 'random'"),
        (["train", "--task", "ucr:NoSuchSet"], "GunPoint"),
        (["train", "--task-args", "{n_bits: 0}"], "n_bits must be a positive integer"),
        (["train", "--bogus", "1"], "unrecognized arguments: --bogus"),
        (["list", "nope"], "invalid choice: 'nope'"),
    ],
)
def test_bad_input_is_one_line(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_config_file_errors(tmp_path, capsys):
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("lr: 0.01\nlearning_rate: 2\n")
    assert main(["train", "--config", str(bad_key)]) == 2
    assert "unknown config key 'learning_rate'" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("lr: 0.01\ntask: [unclosed\n")
    assert main(["train", "--config", str(broken)]) == 2
    assert f"{broken}:" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_config_precedence(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("task: digits\nlr: 0.01\nseed: 4\n")
    assert main(["train", "--config", str(config), "--lr", "3e-4", "--patience", "null", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "task: digits" in printed and "lr: 0.0003" in printed and "seed: 4" in printed
    assert "patience: null" in printed


def test_list_commands(capsys):
    assert main(["list", "tasks"]) == 0
    out = capsys.readouterr().out
    for name in ("bit-xor", "bit-memory", "listops", "digits", "ucr:<name>", "GunPoint"):
        assert name in out
    assert main(["list", "backbones"]) == 0
    out = capsys.readouterr().out
    for name in ("minilm", "smollm2", "gpt2", "bert", "vit", "t5-encoder", "llama"):
        assert name in out


def test_train_from_the_command_line(tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--backbone",
        "bert",
        "--backbone-path",
        tiny_bert_dir,
        "--steps",
        "10",
        "--eval-every",
        "5",
        "--task-args",
        "{train_size: 64, val_size: 32, test_size: 32}",
        "--train",
        "output",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["train_groups"] == ["output"] and result["trainable_params"] == 32 * 2 + 2
    assert "test_accuracy" in capsys.readouterr().out


def test_demo_prints_the_table_from_its_result_files(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| task \\ init | pretrained | random |" in out
    assert "| bit-xor |" in out and "| digits |" in out
    assert len(list(tmp_path.glob("*/result.json"))) == 4


# ---- options generated from the settings models of serve, bench, sweep and report -----------------------------------


def settings_models():
    from fpt.experiments.report import ReportOptions
    from fpt.experiments.sweep import SweepOptions
    from fpt.performance.bench import BenchSettings
    from fpt.shipping.serve import ServeSettings

    return {"serve": ServeSettings, "bench": BenchSettings, "sweep": SweepOptions, "report": ReportOptions}


FLAGS = {  # every flag each command had before its options were generated: they stay
    "serve": "--patch --backbone --backbone-path --host --port --batching --max-wait-ms --max-batch-rows "
    "--max-examples --max-body-mb --allow-upload --threads",
    "bench": "--backbone --backbone-path --shape --rows --repeats --warmup --device --dtype --compile --threads --seed "
    "--json --render",
    "sweep": "--results --runs-dir --workers --backend --ray-address --retry-failed --dry-run --quiet",
    "report": "--out --runs-dir --no-attention --attention-backbone --attention-backbone-path",
}


def has_flag(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


@pytest.mark.parametrize("command", list(FLAGS))
def test_every_settings_field_is_an_option_in_help(command, capsys):
    from fpt.cli import option_flags

    model = settings_models()[command]
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    flags = option_flags(model)
    for name, info in model.model_fields.items():
        assert info.description, f"{model.__name__}.{name} has no description"
        if name in flags:
            assert has_flag(out, flags[name]) and info.description[:30] in " ".join(out.split()), (name, out)
    assert set(flags) >= set(model.model_fields) - {"upload_token"}  # the token comes from the environment only
    for flag in FLAGS[command].split():
        assert has_flag(out, flag), flag


@pytest.mark.parametrize(
    "args, message",
    [
        (["serve", "--batching", "nope"], "--batching: Input should be 'cross-task' or 'per-task' (got 'nope')"),
        (["serve", "--port", "70000"], "--port: Input should be less than or equal to 65535 (got 70000)"),
        (["serve", "--max-examples", "many"], "--max-examples: Input should be a valid integer"),
        (["bench", "--dtype", "fp16"], "--dtype: Input should be 'auto', 'fp32' or 'bf16' (got 'fp16')"),
        (["bench", "--rows", "fpt,nope"], "--rows: unknown bench row 'nope'; choose from fpt, reference,"),
        (["bench", "--shape", "32x120"], "--shape: expected NAME=BATCHxTOKENS"),
        (["sweep", "missing.yaml", "--backend", "spark"], "--backend: Input should be 'local' or 'ray' (got 'spark')"),
        (["sweep", "missing.yaml", "--workers", "0"], "--workers: Input should be greater than or equal to 1 (got 0)"),
        (["report", "r.jsonl", "--out", "r", "--attention-backbone", "nope"], "--attention-backbone: unknown backbone"),
        (["report", "r.jsonl"], "the following arguments are required: --out"),
    ],
)
def test_bad_settings_value_is_one_line_naming_the_option(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_settings_from_options_keep_their_defaults_and_repeat(tmp_path):
    from fpt.cli import build_parser, options_from_args

    models = settings_models()

    def parse(*args):
        return options_from_args(models[args[0]], build_parser(args[0]).parse_args(args))

    serve = parse("serve")
    assert (serve.host, serve.port, serve.batching, serve.max_wait_ms) == ("127.0.0.1", 8000, "cross-task", 2.0)
    assert (serve.max_batch_rows, serve.max_examples, serve.max_body_bytes) == (64, 256, 4 << 20)
    assert serve.patches == [] and not serve.allow_upload and serve.threads is None
    serve = parse("serve", "--patch", "a.fpt.safetensors", "--patch", "b=c", "--max-body-mb", "0.5", "--allow-upload")
    assert serve.patches == ["a.fpt.safetensors", "b=c"] and serve.max_body_bytes == 1 << 19 and serve.allow_upload
    bench = parse("bench", "--shape", "bit-memory=4x24", "--shape", "long=2x64", "--rows", "reference,fpt")
    assert [(s.name, s.batch, s.tokens) for s in bench.shapes] == [("bit-memory", 4, 24), ("long", 2, 64)]
    assert bench.rows == "fpt,reference" and bench.warmup == 2 and bench.dtype == "auto" and not bench.compile
    sweep = parse("sweep", "s.yaml", "--retry-failed", "--results", "r.jsonl", "--workers", "2")
    assert sweep.retry_failed and sweep.results.name == "r.jsonl" and sweep.workers == 2 and sweep.backend == "local"
    report = parse("report", "r.jsonl", "--out", str(tmp_path), "--no-attention")
    assert report.out == tmp_path and not report.attention and parse("report", "r", "--out", "o").attention


def test_one_formatter_for_every_model():
    from pydantic import ValidationError

    from fpt.config import format_validation_error
    from fpt.experiments.plan import SweepConfig

    with pytest.raises(ValidationError) as err:
        SweepConfig(name="s", tasks={"x": {}}, grid=1, seeds=[], lr="fast")
    text = format_validation_error(err.value, SweepConfig, "sweep")
    assert "unknown sweep key 'grid'; allowed keys: name, description, base, tasks, models, exclude, lr, seeds" in text
    assert "seeds: List should have at least 1 item" in text and "lr: Input should be a valid number" in text
    assert "lr.float" not in text and len(text.splitlines()) == 1
