"""fpt: Frozen Pretrained Transformers as universal computation engines (Lu, Grover, Abbeel, Mordatch 2021).

    >>> import fpt
    >>> cfg = fpt.TrainConfig(task="bit-xor", backbone="minilm", seed=0)
    >>> result = fpt.train(cfg, out="runs/xor")      # writes runs/xor/result.json
    >>> result["test_accuracy"]

Building blocks: `fpt.get_task`, `fpt.get_backbone`, `fpt.FPT`, and `fpt.freeze` (which parameters train).
Shipping: `fpt.export_patch(run_dir, out)` writes a run's trained tensors as a patch; `fpt.load_patch(path)` rebuilds
the model on its backbone (checked by fingerprint); `fpt serve` serves many patches on one frozen core.
peft: `get_peft_model(model, fpt.peft_config(model))` makes any BERT, GPT-2 or Llama-family transformers model an FPT
(layer norms, positions and head train), saved and loaded with peft's adapter files; `fpt.export_peft(run_dir, out)`
writes an fpt run as such an adapter folder, which `fpt.load_patch` reads back.
"""

from fpt.backbones import BACKBONES, Backbone, get_backbone
from fpt.config import TrainConfig
from fpt.errors import FPTError
from fpt.freeze import GROUPS, PAPER_GROUPS
from fpt.model import FPT
from fpt.shipping.patch import export as export_patch
from fpt.shipping.patch import from_patch as load_patch
from fpt.shipping.peft_adapter import export_adapter as export_peft
from fpt.shipping.peft_adapter import peft_config
from fpt.tasks import TASKS, Task, TaskSpec, get_task
from fpt.train import build_model, evaluate, train
from fpt.version import __version__

__all__ = [
    "BACKBONES",
    "GROUPS",
    "PAPER_GROUPS",
    "TASKS",
    "FPT",
    "FPTError",
    "Backbone",
    "Task",
    "TaskSpec",
    "TrainConfig",
    "build_model",
    "evaluate",
    "export_patch",
    "export_peft",
    "get_backbone",
    "get_task",
    "load_patch",
    "peft_config",
    "train",
    "__version__",
]
