import inspect

import numpy as np
import pytest
import torch

from fpt.errors import FPTError
from fpt.tasks import get_task
from fpt.tasks.listops import VOCAB, evaluate_expression, generate_examples, listops, read_lra_tsv, write_lra_tsv

SMALL = {"train_size": 200, "val_size": 50, "test_size": 50}


def decode(x: torch.Tensor) -> str:
    return " ".join(VOCAB[i] for i in x.tolist())


def plain(source: str) -> str:
    return " ".join(t for t in source.split() if t not in "()")


def all_examples(task) -> list[tuple[str, int]]:
    return [(decode(x), int(y)) for s in ("train", "val", "test") for x, y in task.splits[s]]


@pytest.mark.parametrize("config", [{}, {"max_depth": 4, "min_length": 10, "max_length": 60, "seed": 7}])
def test_generated_labels_match_the_independent_evaluator(config):
    examples = generate_examples(300, **config)
    assert all(evaluate_expression(source) == value for source, value in examples)
    assert {value for _, value in examples} == set(range(10))


def test_lengths_respect_the_bounds_strictly():
    examples = generate_examples(200, min_length=30, max_length=60, seed=1)
    lengths = [len(source.split()) for source, _ in examples]
    assert min(lengths) > 30 and max(lengths) < 60


@pytest.mark.parametrize(
    "source, value",
    [
        ("( ( ( [MAX 2 ) 9 ) ] )", 9),
        ("[MAX 2 9 ]", 9),
        ("[MAX 2 [MIN 4 7 ] 0 ]", 4),
        ("[MED 1 2 ]", 1),
        ("[MED 3 8 1 0 ]", 2),
        ("[MED 5 1 9 ]", 5),
        ("[SM 9 9 5 ]", 3),
        ("7", 7),
    ],
)
def test_evaluator_on_known_expressions(source, value):
    assert evaluate_expression(source) == value


@pytest.mark.parametrize("source", ["[MAX 2 9", "[MAX 2 9 ] ]", "( [MAX 2 9 ]", "[MAX ]", "2 3", "[FOO 1 ]", ""])
def test_evaluator_rejects_malformed_expressions(source):
    with pytest.raises(ValueError):
        evaluate_expression(source)


def test_plain_and_parenthesised_forms_give_the_same_label():
    for source, value in generate_examples(100, seed=2):
        assert source.startswith("(") and evaluate_expression(plain(source)) == value


def test_task_spec_and_defaults_fit_512_positions():
    assert inspect.signature(listops).parameters["max_length"].default <= 512  # every example is shorter
    task = get_task("listops", **SMALL)
    spec = task.spec
    assert (spec.input, spec.input_dim, spec.num_classes, spec.readout) == ("tokens", 18, 10, "last")
    assert spec.max_tokens < 100 and task.info["data_seed"] == 0
    x, y = task.splits["train"][0]
    assert x.dtype == torch.long and x.min() >= 1 and y.shape == (1,)


def test_generated_data_is_deterministic_and_deduplicated_across_splits():
    a, b, c = get_task("listops", **SMALL, seed=3), get_task("listops", **SMALL, seed=3), get_task("listops", **SMALL)
    assert all_examples(a) == all_examples(b) != all_examples(c)
    # Tiny trees (depth 2, up to 3 digits) repeat often before de-duplication; none may repeat after it.
    task = get_task("listops", **SMALL, max_depth=2, max_args=3, min_length=0)
    sources = [s for s, _ in all_examples(task)]
    assert len(sources) == len(set(sources)) == 300


def test_too_few_distinct_trees_is_an_error():
    with pytest.raises(FPTError, match="distinct trees"):
        generate_examples(20, max_depth=1, min_length=0)  # only the ten digits exist


def test_brackets_are_kept_or_dropped():
    kept = get_task("listops", **SMALL, seed=4)
    dropped = get_task("listops", **SMALL, seed=4, keep_brackets=False)
    for (s_kept, y_kept), (s_dropped, y_dropped) in zip(all_examples(kept), all_examples(dropped), strict=True):
        assert plain(s_kept) == s_dropped and "(" not in s_dropped and y_kept == y_dropped
    assert dropped.spec.max_tokens < kept.spec.max_tokens


def test_max_len_drops_and_reports(capsys):
    task = get_task("listops", **SMALL, max_len=40)
    dropped = task.info["dropped_over_max_len"]
    assert sum(dropped.values()) > 0 and task.spec.max_tokens <= 40
    assert {s: len(task.splits[s]) + dropped[s] for s in dropped} == {"train": 200, "val": 50, "test": 50}
    assert "dropped" in capsys.readouterr().err


def write_lra_dir(tmp_path, splits: dict[str, list[tuple[str, int]]]):
    for split, examples in splits.items():
        write_lra_tsv(tmp_path / f"basic_{split}.tsv", examples)
    return tmp_path


def test_tsv_files_round_trip_in_both_forms(tmp_path):
    examples = generate_examples(30, seed=5)
    rows = {"train": examples[:20], "val": examples[20:25], "test": [(plain(s), v) for s, v in examples[25:]]}
    data_dir = write_lra_dir(tmp_path, rows)
    task = get_task("listops", data_dir=str(data_dir))
    for split, expected in rows.items():
        assert [(decode(x), int(y)) for x, y in task.splits[split]] == expected
    assert task.info["generated"] is False
    no_brackets = get_task("listops", data_dir=str(data_dir), keep_brackets=False)
    assert [decode(x) for x, _ in no_brackets.splits["train"]] == [plain(s) for s, _ in rows["train"]]


@pytest.mark.parametrize(
    "content, line, words",
    [
        ("Source,Target\n[MAX 2 9 ]\t9\n", 1, "header"),
        ("Source\tTarget\n[MAX 2 9 ]\t9\n[MAX 2 9 ]\n", 3, "2 tab-separated columns"),
        ("Source\tTarget\n[MAX 2 9 ]\t9\t1\n", 2, "2 tab-separated columns"),
        ("Source\tTarget\n[MAX 2 9 ]\t9\n[MEAN 2 9 ]\t5\n", 3, "'[MEAN'; ListOps tokens are: ( ) [MIN"),
        ("Source\tTarget\n[MAX 2 10 ]\t9\n", 2, "unknown token '10'"),
        ("Source\tTarget\n[MAX 2 9 ]\t12\n", 2, "Target"),
        ("Source\tTarget\n[MAX 2 9 ]\tnine\n", 2, "Target"),
        ("Source\tTarget\n( [MAX 2 9 ]\t9\n", 2, "unbalanced"),
    ],
)
def test_malformed_tsv_names_file_and_line(tmp_path, content, line, words):
    path = tmp_path / "basic_train.tsv"
    path.write_text(content)
    with pytest.raises(FPTError) as error:
        read_lra_tsv(path)
    assert f"{path}:{line}:" in str(error.value) and words in str(error.value)


def test_missing_file_and_generator_arguments_with_data_dir_are_errors(tmp_path):
    write_lra_dir(tmp_path, {"train": [("[MAX 2 9 ]", 9)], "test": [("[MIN 2 9 ]", 2)]})
    with pytest.raises(FPTError, match="basic_val.tsv: no such file"):
        get_task("listops", data_dir=str(tmp_path))
    with pytest.raises(FPTError, match="max_depth"):
        get_task("listops", data_dir=str(tmp_path), max_depth=3)


def test_label_counts_are_recorded():
    task = get_task("listops", **SMALL)
    counts = task.info["label_counts"]["train"]
    assert sum(counts) == 200 and np.argmax(counts) in range(10)
