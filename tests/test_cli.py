import json
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
