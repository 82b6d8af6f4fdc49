"""Time series from the user's files (.ts, .csv, .npz, .tsf), the recipe, regression and forecasting in the loop."""

import json
import math

import numpy as np
import pytest
import torch

import fpt
from fpt.errors import FPTError
from fpt.evaluate import evaluate
from fpt.results import read_curve
from fpt.tasks import get_task
from fpt.tasks.base import RegressionSplit
from fpt.tasks.series import Recipe

rng = np.random.default_rng(0)


def write_ts(path, rows, header="@classLabel true a b", channels=1):
    lines = ["@problemName toy", "@timeStamps false", f"@univariate {'true' if channels == 1 else 'false'}",
             "@equalLength true", header, "@data", *rows]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def toy_series(n, length=24, seed=0):
    """Class a: a rising ramp plus noise; class b: a falling one."""
    r = np.random.default_rng(seed)
    labels = np.array(["a", "b"] * (n // 2))
    ramps = np.where(labels[:, None] == "a", 1.0, -1.0) * np.linspace(-1, 1, length)
    return ramps + 0.1 * r.standard_normal((n, length)), labels


def ts_rows(x, labels):
    return [",".join(f"{v:.5f}" for v in row) + f":{label}" for row, label in zip(x, labels, strict=True)]


@pytest.fixture
def toy_files(tmp_path):
    x, y = toy_series(40)
    xt, yt = toy_series(20, seed=1)
    files = {
        "ts": (write_ts(tmp_path / "A_TRAIN.ts", ts_rows(x, y)), write_ts(tmp_path / "A_TEST.ts", ts_rows(xt, yt)))
    }
    for name, (xs, ys) in {"TRAIN": (x, y), "TEST": (xt, yt)}.items():
        (tmp_path / f"A_{name}.csv").write_text(
            "\n".join(f"{lab}," + ",".join(map(str, row)) for row, lab in zip(xs, ys, strict=True))
        )
        np.savez(tmp_path / f"A_{name}.npz", X=xs[:, None, :], y=ys)
    files["csv"] = (str(tmp_path / "A_TRAIN.csv"), str(tmp_path / "A_TEST.csv"))
    files["npz"] = (str(tmp_path / "A_TRAIN.npz"), str(tmp_path / "A_TEST.npz"))
    return files


@pytest.mark.parametrize("form", ["ts", "csv", "npz"])
def test_each_file_form_gives_the_same_task(toy_files, form):
    train, test = toy_files[form]
    task = get_task("ts", train=train, test=test, patch=4)
    assert task.spec.objective == "classification" and task.spec.label_names == ("a", "b")
    assert task.spec.input_dim == 4 and task.spec.max_tokens == 6 and task.info["split_sizes"] == {
        "train": 32, "val": 8, "test": 20}  # fmt: skip
    reference = get_task("ts", train=toy_files["ts"][0], test=toy_files["ts"][1], patch=4)
    for split in ("train", "val", "test"):
        assert torch.equal(task.splits[split].labels, reference.splits[split].labels)
        assert torch.allclose(task.splits[split].inputs, reference.splits[split].inputs, atol=1e-4)


def test_ts_task_trains_and_writes_the_usual_results(toy_files, tiny_cfg, tmp_path):
    train, test = toy_files["ts"]
    result = fpt.train(
        tiny_cfg(task="ts", task_args={"train": train, "test": test, "patch": 4}, steps=30),
        out=tmp_path / "run",
        quiet=True,
    )
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["metric"] == "accuracy" and saved["test_accuracy"] == result["test_accuracy"]
    assert saved["task_info"]["normalise"] == "global" and (tmp_path / "run" / "trained.safetensors").exists()


def malformed(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return str(path)


HEADER = "@problemName x\n@univariate true\n@equalLength false\n@classLabel true a b\n@data\n"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing-label.ts", HEADER + "1,2,3:a\n1,2,3\n", r"missing-label.ts:7: missing label"),
        ("nan.ts", HEADER + "1,2,3:a\n1,NaN,3:b\n", r"nan.ts:7: missing value \(NaN\)"),
        ("word.ts", HEADER + "1,2,3:a\n1,x,3:b\n", r"word.ts:7: 'x' is not a finite number"),
        ("channels.ts", HEADER + "1,2,3:4,5,6:a\n1,2,3:b\n", r"channels.ts:7: 1 channels, but the first series has 2"),
        ("label.ts", HEADER + "1,2,3:c\n", r"label.ts:6: label 'c' is not among the header's a, b"),
        ("nolabels.ts", "@problemName x\n@data\n1,2:a\n", r"nolabels.ts: the header declares no labels"),
        ("empty.ts", "", r"empty.ts: empty file"),
        ("ragged.csv", "a,1,2,3\nb,1,2\n", r"ragged.csv:2: 3 fields, but the first row has 4 \(ragged row\)"),
        ("nolabel.csv", "a,1,2,3\n,1,2,3\n", r"nolabel.csv:2: missing label in column 0"),
        ("nan.csv", "a,1,2,3\nb,1,nan,3\n", r"nan.csv:2: missing value at position 2"),
        ("empty.csv", "", r"empty.csv: empty file"),
        ("blank.csv", "\n\n", r"blank.csv: empty file"),
        ("nan.npz", None, r"nan.npz: X\[1\] holds NaN or inf"),
        ("short-y.npz", None, r"short-y.npz: y must be shaped \(3,\)"),
        ("noy.npz", None, r"noy.npz: no array 'y'"),
        ("cut.npz", b"PK\x03\x04 not really", r"cut.npz: not a readable .npz"),
        ("data.parquet", "x", r"unknown time-series format '.parquet'"),
    ],
)
def test_malformed_files_get_one_line(tmp_path, name, text, message):
    if name.endswith(".npz") and text is None:
        x = np.ones((3, 5))
        if name == "nan.npz":
            x[1, 2] = np.nan
        arrays = {"X": x, "y": np.arange(2 if name == "short-y.npz" else 3)}
        arrays.pop("y") if name == "noy.npz" else None
        np.savez(tmp_path / name, **arrays)
        path = str(tmp_path / name)
    else:
        path = malformed(tmp_path, name, text)
    with pytest.raises(FPTError, match=message) as err:
        get_task("ts", train=path, test=path)
    assert "\n" not in str(err.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FPTError, match=r"nowhere_TRAIN.ts: no such file"):
        get_task("ts", train=str(tmp_path / "nowhere_TRAIN.ts"), test=str(tmp_path / "x.ts"))


def test_train_and_test_channel_counts_must_agree(tmp_path):
    two = write_ts(tmp_path / "two.ts", ["1,2:3,4:a", "1,2:3,4:b"] * 4, channels=2)
    one = write_ts(tmp_path / "one.ts", ["1,2:a", "1,2:b"])
    with pytest.raises(FPTError, match=r"different channel counts \(\[1, 2\]\)"):
        get_task("ts", train=two, test=one)


# ---- the recipe ------------------------------------------------------------------------------------------------


def test_recipe_patches_strides_and_channel_independent_tokens():
    x = np.arange(20, dtype=np.float64).reshape(10, 2)  # (T=10, C=2): channel 0 even numbers, channel 1 odd
    mixed = Recipe(patch=4, stride=2).tokens(x)  # windows at 0, 2, 4, 6 (the last reaches 9 with one padded row)
    assert mixed.shape == (4, 8) and Recipe(patch=4, stride=2).token_count(10, 2) == 4
    assert mixed[1].tolist() == x[2:6].reshape(-1).tolist()  # time-major: (t2c0, t2c1, t3c0, ...)
    independent = Recipe(patch=4, stride=2, channels="independent").tokens(x)  # (4 windows × 2 channels, 4)
    assert independent.shape == (8, 4) and Recipe(patch=4, stride=2, channels="independent").input_dim(2) == 4
    assert independent[1].tolist() == x[2:6, 0].tolist() and independent[4].tolist() == x[0:4, 1].tolist()
    assert Recipe(patch=3).tokens(x).shape == (4, 6)  # non-overlapping, the tail zero-padded
    with pytest.raises(FPTError, match="stride must be between 1 and patch"):
        Recipe(patch=2, stride=3)


def test_instance_normalisation_scales_each_series_by_itself(toy_files):
    train, test = toy_files["ts"]
    task = get_task("ts", train=train, test=test, patch=1, normalise="instance")
    for x, _ in [task.splits["test"][i] for i in range(5)]:
        assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(unbiased=False)) - 1) < 1e-4
    with pytest.raises(FPTError, match="normalise must be global, instance or none"):
        get_task("ts", train=train, test=test, normalise="minmax")


# ---- regression ------------------------------------------------------------------------------------------------


def test_regression_metrics_are_in_the_datas_units():
    targets = np.array([[10.0], [20.0], [30.0], [40.0]])
    split = RegressionSplit([torch.zeros(2, 1)] * 4, targets, offset=25.0, scale=5.0, mase_scale=2.0)

    class Constant(torch.nn.Module):  # predicts the normalised 0, i.e. 25 in the data's units
        def forward(self, x, mask):
            return torch.zeros(x.shape[0], 1, 1)

    metrics = evaluate(Constant(), split, 3, torch.device("cpu"), metric="mae")
    errors = np.array([15.0, 5.0, 5.0, 15.0])
    assert metrics["mse"] == pytest.approx((errors**2).mean()) and metrics["mae"] == pytest.approx(errors.mean())
    assert metrics["mase"] == pytest.approx(errors.mean() / 2) and metrics["score"] == -metrics["mae"]
    assert metrics["loss"] == pytest.approx(((errors / 5) ** 2).mean())


def test_regression_from_a_csv_trains_and_selects_on_lowest_mse(tmp_path, tiny_cfg):
    x = rng.standard_normal((60, 12))
    target = x.mean(1) * 3 + 100.0 + 0.01  # not whole numbers: a regression set
    rows = [f"{t}," + ",".join(map(str, r)) for r, t in zip(x, target, strict=True)]
    (tmp_path / "R_TRAIN.csv").write_text("\n".join(rows[:40]))
    (tmp_path / "R_TEST.csv").write_text("\n".join(rows[40:]))
    args = {"train": str(tmp_path / "R_TRAIN.csv"), "test": str(tmp_path / "R_TEST.csv"), "patch": 3}
    task = get_task("ts", **args)
    assert task.spec.objective == "regression" and task.spec.metric == "mse" and task.spec.num_classes == 1
    result = fpt.train(tiny_cfg(task="ts", task_args=args, steps=40, eval_every=10), out=tmp_path / "run", quiet=True)
    assert result["metric"] == "mse" and "test_accuracy" not in result
    assert {"test_mse", "test_mae", "val_mse", "val_score"} <= set(result)
    curve = read_curve(tmp_path / "run")
    best = min(curve, key=lambda row: row["val_mse"])
    assert result["best_step"] == best["step"] and result["val_mse"] == pytest.approx(best["val_mse"])


def test_shipped_regression_set():
    task = get_task("ucr:Covid3Month")
    assert task.spec.objective == "regression" and task.info["split_sizes"]["test"] == 61
    y = task.splits["train"].labels  # (N, 1, 4): normalised target, offset, scale, no MASE scale
    assert y.shape[1:] == (1, 4) and abs(float(y[:, 0, 0].mean())) < 1e-5 and math.isnan(float(y[0, 0, 3]))


# ---- forecasting -----------------------------------------------------------------------------------------------


def test_forecast_windows_regions_and_mase_scale(tmp_path):
    series = np.arange(100, dtype=np.float64) * 2.0  # a line: the naive forecast's in-sample MAE is 2
    np.savez(tmp_path / "line.npz", series=series)
    task = get_task(f"forecast:{tmp_path / 'line.npz'}", horizon=5, lookback=10)
    # test: the last 20 points, val the 20 before, train the first 60: 60 - 15 + 1 windows in train.
    assert task.info["split_sizes"] == {"train": 46, "val": 16, "test": 16}
    assert task.spec.predictions_per_token == 5 and task.spec.metric == "mase" and task.spec.max_tokens == 10
    x, y = task.splits["test"][15]  # the last window: lookback 85..94, horizon 95..99
    target, offset, scale, mase = y.unbind(-1)
    assert torch.allclose(target * scale + offset, torch.tensor(series[95:], dtype=torch.float32))
    assert torch.allclose(mase, torch.full((5,), 2.0))
    assert abs(float(x.mean())) < 1e-5  # normalised by its own lookback


@pytest.mark.parametrize("name", ["Airline", "Lynx", "ShampooSales", "Uschange", "solar", "PBS", "m1_yearly"])
def test_shipped_forecasting_sets_load_offline(name):
    task = get_task(f"forecast:{name}")
    assert all(task.info["split_sizes"][s] > 0 for s in ("train", "val", "test"))


def test_forecast_bad_inputs(tmp_path):
    (tmp_path / "ragged.csv").write_text("date,v\n2020,1\n2021\n")
    with pytest.raises(FPTError, match=r"ragged.csv:3: 1 fields, but the header has 2"):
        get_task(f"forecast:{tmp_path / 'ragged.csv'}", horizon=1)
    with pytest.raises(FPTError, match="not a shipped set"):
        get_task("forecast:Nowhere")
    np.savez(tmp_path / "short.npz", series=np.arange(10.0))
    with pytest.raises(FPTError, match="no train windows"):
        get_task(f"forecast:{tmp_path / 'short.npz'}", horizon=3, lookback=3)


def test_forecast_trains_with_the_linear_baseline_and_fpt(tiny_cfg, tmp_path):
    for model in ("linear", "fpt"):
        result = fpt.train(tiny_cfg(task="forecast:Airline", task_args={}, model=model, steps=20), quiet=True)
        assert result["metric"] == "mase" and math.isfinite(result["test_mase"]) and result["test_mse"] > 0


def test_ts_without_its_files_says_what_it_needs():
    with pytest.raises(
        FPTError, match=r"task 'ts' needs the arguments train, test: --task-args '\{train: ..., test: ...\}'"
    ):
        get_task("ts")


# ---- the classical baselines -------------------------------------------------------------------------------------


def test_classical_baselines_write_the_usual_result_files(toy_files, tmp_path):
    train, test = toy_files["ts"]
    args = {"train": train, "test": test}
    for model in ("minirocket", "dtw-1nn"):
        result = fpt.train(fpt.TrainConfig(task="ts", task_args=args, model=model), out=tmp_path / model, quiet=True)
        saved = json.loads((tmp_path / model / "result.json").read_text())
        assert saved["fitted"] and saved["metric"] == "accuracy" and saved["test_accuracy"] == result["test_accuracy"]
        assert result["test_accuracy"] >= 0.9  # rising vs falling ramps: both separate them


def test_forecasting_baselines_by_hand(tmp_path):
    series = np.tile([1.0, 5.0, 3.0], 20)  # period 3
    np.savez(tmp_path / "period.npz", series=series)
    name = f"forecast:{tmp_path / 'period.npz'}"
    naive = fpt.train(fpt.TrainConfig(task=name, task_args={"horizon": 1, "season": 1}, model="seasonal-naive"))
    assert naive["test_mae"] == pytest.approx(8 / 3)  # |5 - 1|, |3 - 5|, |1 - 3| in turn
    assert naive["test_mase"] == pytest.approx(1.0, rel=0.05)  # the naive forecast against its own in-sample error
    with pytest.raises(FPTError, match="cannot compute mase: no series has a MASE scale"):
        fpt.train(fpt.TrainConfig(task=name, task_args={"horizon": 3, "season": 3}, model="seasonal-naive"))

    trend = series + 0.5 * np.arange(len(series))  # period 3 on a slope: one season back is 1.5 too low
    np.savez(tmp_path / "trend.npz", series=trend)
    args = {"horizon": 3, "season": 3}
    seasonal = fpt.train(
        fpt.TrainConfig(task=f"forecast:{tmp_path / 'trend.npz'}", task_args=args, model="seasonal-naive")
    )
    assert seasonal["test_mae"] == pytest.approx(1.5) and seasonal["test_mase"] == pytest.approx(1.0)
    ets = fpt.train(fpt.TrainConfig(task=f"forecast:{tmp_path / 'trend.npz'}", task_args=args, model="ets"))
    assert ets["test_mase"] < 0.1  # additive trend and season: exponential smoothing fits it


def test_classical_models_refuse_the_wrong_kind_of_task():
    with pytest.raises(FPTError, match="model 'ets' fits forecast: tasks, not 'ucr:GunPoint'"):
        fpt.train(fpt.TrainConfig(task="ucr:GunPoint", model="ets"))
    with pytest.raises(FPTError, match="model 'minirocket' fits ts and ucr: tasks, not 'bit-xor'"):
        fpt.train(fpt.TrainConfig(task="bit-xor", model="minirocket"))


def test_dlinear_trends_and_remainder_sum_to_the_input():
    from fpt.baselines.dlinear import DLinear

    spec = get_task("forecast:Airline").spec
    model = DLinear(spec)
    with torch.no_grad():
        for layer in (model.seasonal, model.trend):
            layer.weight.zero_()
            layer.bias.zero_()
            layer.weight[0, -1] = 1.0  # both output the last input step: trend + remainder = the step itself
    x = torch.randn(2, spec.max_tokens, 1)
    out = model(x, torch.ones(2, spec.max_tokens, dtype=torch.bool))
    assert out.shape == (2, 12, 1) and torch.allclose(out[:, 0, 0], x[:, -1, 0], atol=1e-6)
