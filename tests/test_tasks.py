import numpy as np
import pytest
import torch

import fpt
from fpt.tasks import TASKS, collate


def test_bit_xor_labels_are_xor():
    task = fpt.get_task("bit-xor", n_bits=5, train_size=50)
    assert task.spec.max_tokens == 10 and task.spec.num_outputs == 5
    for i in range(50):
        x, y = task.splits["train"][i]
        assert x.shape == (10, 1) and set(x.unique().tolist()) <= {0.0, 1.0}
        a, b = x[:5, 0].long(), x[5:, 0].long()
        assert torch.equal(y, a ^ b)


def test_bit_memory_matches_paper_shapes():
    task = fpt.get_task("bit-memory", val_size=5)
    x, y = task.splits["val"][3]
    assert x.shape == (120, 50) and y.shape == (1000,)
    patterns, query = x[:100].reshape(5, 1000), x[100:].reshape(1000)
    assert set(patterns.unique().tolist()) == {-1.0, 1.0}
    target = patterns[[torch.equal(torch.where(query != 0, p, 0), query) for p in patterns].index(True)]
    assert torch.equal(y, (target > 0).long())
    masked = (query == 0).float().mean().item()
    assert 0.4 < masked < 0.6  # mask_prob 0.5
    assert task.spec.num_outputs == 20 and task.spec.predictions_per_token == 50


def test_generated_splits_are_deterministic_and_distinct():
    a, b = fpt.get_task("bit-memory", val_size=3), fpt.get_task("bit-memory", val_size=3)
    assert torch.equal(a.splits["val"][1][0], b.splits["val"][1][0])
    assert not torch.equal(a.splits["val"][1][0], a.splits["test"][1][0])
    c = fpt.get_task("bit-memory", val_size=3, seed=7)
    assert not torch.equal(a.splits["val"][1][0], c.splits["val"][1][0])


def test_digits_splits():
    task = fpt.get_task("digits")
    sizes = task.info["split_sizes"]
    assert sum(sizes.values()) == 1797 and sizes["val"] > 200 and sizes["test"] > 200
    x, y = task.splits["train"][0]
    assert x.shape == (16, 4) and 0.0 <= x.min() and x.max() <= 1.0 and y.shape == (1,)
    seen = [
        {tuple(task.splits[s][i][0].flatten().tolist()) for i in range(len(task.splits[s]))} for s in ("train", "test")
    ]
    assert len(seen[0] & seen[1]) < 20  # splits are disjoint up to the few duplicate images in the data
    labels = np.array([int(task.splits["test"][i][1]) for i in range(len(task.splits["test"]))])
    assert np.bincount(labels).min() >= 20  # stratified


def test_collate_pads_per_batch():
    batch = [(torch.ones(3, 2), torch.tensor([1])), (torch.ones(5, 2), torch.tensor([0]))]
    x, mask, y = collate(batch)
    assert x.shape == (2, 5, 2) and mask.sum(1).tolist() == [3, 5] and x[0, 3:].abs().sum() == 0


@pytest.mark.parametrize("name", [e.name for e in TASKS.entries() if not e.prefix])
def test_every_registered_task_builds_with_three_splits(name):
    try:
        task = fpt.get_task(name)
    except fpt.FPTError as err:  # a task that reads the user's copy of published files (tested on tiny files elsewhere)
        if "data_dir" not in str(err) and "needs the argument" not in str(err):
            raise
        pytest.skip(f"reads the user's files: {err}")
    assert all(len(task.splits[s]) > 0 for s in ("train", "val", "test"))
    x, y = task.splits["val"][0]
    assert y.shape == (task.spec.num_outputs * task.spec.predictions_per_token,)
    assert x.shape[0] <= task.spec.max_tokens


def test_unknown_task_and_argument():
    with pytest.raises(fpt.FPTError, match="unknown task 'nope'; choose from: .*bit-xor"):
        fpt.get_task("nope")
    with pytest.raises(fpt.FPTError, match="has no argument 'bits'.*n_bits"):
        fpt.get_task("bit-xor", bits=3)
    with pytest.raises(fpt.FPTError, match="multiple of patch"):
        fpt.get_task("bit-memory", n_bits=999)
