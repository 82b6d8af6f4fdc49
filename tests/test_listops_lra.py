"""listops-lra: LRA's published ListOps TSV files, read with fpt.tasks.listops.read_lra_tsv."""

import pytest

import fpt
from fpt.tasks.listops import LRA_FILES, VOCAB, generate_examples, write_lra_tsv


@pytest.fixture
def lra_dir(tmp_path):
    examples = generate_examples(30, max_depth=4, min_length=10, max_length=60, seed=3)
    for name, part in zip(LRA_FILES.values(), (examples[:20], examples[20:25], examples[25:]), strict=True):
        write_lra_tsv(tmp_path / name, part)
    return tmp_path, examples


def test_listops_lra_reads_the_published_splits(lra_dir):
    folder, examples = lra_dir
    task = fpt.get_task("listops-lra", data_dir=str(folder))
    assert task.spec.name == "listops-lra" and task.spec.input_dim == len(VOCAB) and task.spec.num_classes == 10
    assert task.info["split_sizes"] == {"train": 20, "val": 5, "test": 5} and task.info["generated"] is False
    x, y = task.splits["test"][0]
    assert " ".join(VOCAB[i] for i in x.tolist()) == examples[25][0] and int(y) == examples[25][1]
    plain = fpt.get_task("listops-lra", data_dir=str(folder), keep_brackets=False)
    assert plain.spec.max_tokens < task.spec.max_tokens


def test_listops_lra_needs_data_dir_and_names_a_truncated_file(lra_dir):
    folder, _ = lra_dir
    with pytest.raises(fpt.FPTError, match="task 'listops-lra' reads your copy of LRA"):
        fpt.get_task("listops-lra")
    path = folder / "basic_val.tsv"
    text = path.read_text()
    path.write_text(text[: text.rindex("\t") - 3])  # cut inside the last example's source
    with pytest.raises(fpt.FPTError, match=r"basic_val.tsv:\d+: expected 2 tab-separated columns") as err:
        fpt.get_task("listops-lra", data_dir=str(folder))
    assert "\n" not in str(err.value)
