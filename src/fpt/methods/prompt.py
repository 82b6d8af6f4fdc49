"""Prompt tuning through peft: trained virtual tokens that the frozen backbone reads before the inputs."""

from __future__ import annotations

import torch
from torch import nn

from fpt.backbones.base import Backbone
from fpt.methods.base import Method
from fpt.registry import METHODS


@METHODS.register(
    "prompt",
    "Prompt tuning (Lester et al. 2021): N trained virtual tokens before the inputs, started from sampled "
    "token embeddings of the backbone (peft PromptEmbedding)",
    options=("prompt_tokens",),
    default_train="input,output",
)
class PromptTuning(Method):
    """The virtual tokens live in the backbone (`backbone.prompt`, peft's PromptEmbedding) beside its body, so they are
    checkpointed and exported under one name whatever the family. FPT puts them after the BOS token, if the backbone
    uses one, and before the inputs: they take the first positions, and the read-out tokens stay the inputs' own."""

    name = "prompt"

    def __init__(self, cfg) -> None:
        self.tokens = cfg.prompt_tokens

    def adapt(self, backbone: Backbone) -> None:
        from peft import PromptTuningConfig, PromptTuningInit
        from peft.tuners.prompt_tuning import PromptEmbedding

        config = PromptTuningConfig(
            num_virtual_tokens=self.tokens,
            token_dim=backbone.hidden_size,
            num_transformer_submodules=1,
            prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB,  # rows of the token table: the scale the body knows
        )
        table = nn.Embedding.from_pretrained(backbone.token_embeddings().detach().float())
        backbone.prompt = PromptEmbedding(config, table)

    def parameters(self, backbone: Backbone) -> list[nn.Parameter]:
        return list(backbone.prompt.parameters())

    def prefix(self, backbone: Backbone) -> torch.Tensor:
        return backbone.prompt.embedding.weight
