"""`transformer`: the paper's fully trained transformer, the backbone's architecture with every weight trained.

It is FPT's own model (input layer → backbone → readout → head), built by the same factory; TrainConfig sets
`train: all` for it (registered with trains_all) and refuses any other groups. `--init random` trains it from
scratch (the paper's Table 1 row), `--init pretrained` fine-tunes every weight from the pretrained ones.
"""

from __future__ import annotations

from fpt.model import FPT, fpt_model
from fpt.registry import MODELS
from fpt.tasks import TaskSpec


@MODELS.register(
    "transformer",
    "the backbone's architecture with every weight trained: from scratch with --init random, else from pretrained",
    trains_all=True,
)
def transformer(cfg, spec: TaskSpec) -> FPT:
    return fpt_model(cfg, spec)
