"""The backbone interface every family implements, and the shared loading rules.

A backbone is a pretrained transformer body: it takes input embeddings (B, T, D) and a padding mask (B, T) and
returns hidden states (B, T, D). It adds its own positional information (a learned table, relative biases or
rotary angles) and applies its own embedding normalisation, exactly as the pretrained model did.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from fpt.errors import FPTError


class Backbone(nn.Module):
    """A transformer body wrapped for FPT. Subclasses set `model` and implement `body_groups`."""

    family: str = ""
    # The transformers `config.model_type`s whose bare body (a transformers model's `base_model`) has this family's
    # module structure: how fpt.shipping.peft_adapter finds the groups of a model fpt did not build.
    model_types: tuple[str, ...] = ()
    # Whether the body adds something to the input vectors before its first norm (positions, token types), so that
    # an input layer mapping some input to the zero vector still gives the body a nonzero token. Where nothing is
    # added (rotary or relative positions, RMSNorm), a zero token stays zero through every layer and its gradient
    # through the norms (1/sqrt(eps) each) overflows: the input layer must never map an input to zero there.
    adds_to_inputs: bool = True
    # The token id a pretrained decoder saw first in every sequence (its BOS), and whether FPT puts that token's frozen
    # embedding before the inputs by default. A causal LM turns its first position into an attention sink with
    # activations ~100× the others' (smollm2: hidden norm ~24,000 vs ~200 at layer 15): without BOS that is the first
    # input token, whose content is then lost — and every token after it equal to it, as in a run of equal bits.
    bos_token: int | None = None
    prepend_bos: bool = False
    dropout_keys: tuple[str, ...] = ()  # the transformers config's dropout probabilities fpt's `dropout` sets

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        source: str,
        init: str,
        hidden_size: int,
        max_positions: int | None,
        causal: bool,
        folder: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name  # the registry name, e.g. "minilm"
        self.source = source  # where the weights came from (folder, file or hub id)
        self.folder = folder or source  # the transformers folder (or hub id) they load from: for tools that load it
        self.init = init  # "pretrained" or "random"
        self.hidden_size = hidden_size
        self.max_positions = max_positions  # longest sequence the position table covers; None if unbounded
        self.causal = causal

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """embeds (B, T, D) float, mask (B, T) bool with True at real tokens → hidden states (B, T, D)."""
        if not self.prepend_bos:
            return self.model(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        embeds, mask = self.with_bos(embeds, mask)
        hidden = self.model(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        return hidden[:, 1:]  # (B, T, D): the inputs' positions

    def with_bos(self, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The BOS token's frozen embedding before every row (see `prepend`)."""
        return prepend(self.token_embeddings()[self.bos_token : self.bos_token + 1], embeds, mask)

    def use_bos(self, on: bool | None) -> None:
        """Put the BOS token before the inputs (on), not (off), or as the family does (None)."""
        if on and self.bos_token is None:
            raise FPTError(f"backbone {self.name!r} has no BOS token to start sequences with; leave bos unset")
        if on is not None:
            self.prepend_bos = on

    def forward_at(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, k, D) at `positions` (B, k) only: what a last-k readout needs. A family that can skip
        the last layer's work for the other tokens overrides this; by default the whole body runs and is gathered."""
        return gather(self(embeds, mask), positions)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter of `self.model` in exactly one of BACKBONE_GROUPS, chosen by module structure."""
        return self.body_groups(self.model)

    @staticmethod
    def body_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
        """The groups of a bare transformers body of the family (a BertModel, a GPT2Model, ...): one rule, whether the
        body runs inside fpt's FPT or inside a peft model."""
        raise NotImplementedError

    def layers(self) -> nn.ModuleList:
        """The body's transformer blocks, first to last: what gradual unfreezing and fpt.moved count layers by."""
        raise NotImplementedError

    def keep_layers(self, n: int) -> None:
        """Keep the first `n` transformer blocks and drop the rest (the ablations of Tan et al. 2024: 0 blocks is
        "no language model", 1 block trained from scratch is "one transformer layer")."""
        blocks = self.layers()
        if n > len(blocks):
            raise FPTError(
                f"layers {n}: backbone {self.name!r} has {len(blocks)} transformer blocks (allowed 0-{len(blocks)})"
            )
        del blocks[n:]
        self.model.config.num_hidden_layers = n  # families whose forward loops over the config's count

    def token_embeddings(self) -> torch.Tensor:
        """(V, D) rows of the input-side embedding table; used to match the input layer's scale."""
        raise NotImplementedError

    def embedding_norm(self) -> float:
        """Mean L2 norm of the backbone's token embeddings: the scale its first layer was trained to see."""
        return self.token_embeddings().detach().float().norm(dim=-1).mean().item()

    def check_length(self, length: int) -> None:
        length += self.prepend_bos  # the BOS token takes a position too
        if self.max_positions is not None and length > self.max_positions:
            raise FPTError(
                f"sequence of {length} tokens is longer than backbone {self.name!r} covers "
                f"({self.max_positions} positions); shorten the task (task_args) or choose another backbone"
            )


def gather(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x (B, T, C) at rows (B, k) → (B, k, C): each sequence's tokens at its own positions."""
    return x.gather(1, rows[..., None].expand(-1, -1, x.shape[-1]))


def prepend(tokens: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (n, D) before every row: embeds (B, T, D), mask (B, T) → (B, n + T, D), (B, n + T), the new tokens
    real (a decoder's BOS, prompt tuning's virtual tokens)."""
    b = embeds.shape[0]
    embeds = torch.cat([tokens.to(embeds.dtype).expand(b, -1, -1), embeds], 1)
    return embeds, torch.cat([mask.new_ones(b, len(tokens)), mask], 1)


@contextmanager
def loading_bars(show: bool) -> Iterator[None]:
    """transformers' weight-loading and conversion progress bars on or off for what runs inside, then as the caller
    had them (fpt is library code too: nothing global is left changed)."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if show else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()


def params(*items: nn.Module | nn.Parameter | Iterable[nn.Module | nn.Parameter]) -> list[nn.Parameter]:
    """Flatten modules and parameters into a list of parameters (a module contributes all of its own)."""
    out: list[nn.Parameter] = []
    for item in items:
        if isinstance(item, nn.Parameter):
            out.append(item)
        elif isinstance(item, nn.Module):
            out.extend(item.parameters())
        else:
            out.extend(params(*item))
    return out


def set_dropout(config, dropout: float, *names: str) -> None:
    """Set the named dropout probabilities of a transformers config (the paper trains with dropout 0.1)."""
    for key in names:
        if not hasattr(config, key):
            raise AttributeError(f"{type(config).__name__} has no {key}")
        setattr(config, key, dropout)


def load_hf(
    model_cls,
    source: str,
    init: str,
    *,
    allowed_unused: tuple[str, ...] = (),
    dropout: float | None = None,
    dropout_keys: tuple[str, ...] = (),
    **kwargs,
) -> nn.Module:
    """Load a transformers model from a local folder (or a hub id already in the local cache), strictly.

    `init="random"` builds the same architecture with the family's own initialisation. Missing weights, or
    checkpoint weights that are neither used nor matched by `allowed_unused` (regexes), are an error.
    Nothing is downloaded: `local_files_only` is always on.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as err:
        raise FPTError(
            f"cannot load backbone config from {source!r}: give a local model folder "
            f"(or a hub id already in the local Hugging Face cache) — {str(err).splitlines()[0]}"
        ) from None
    if dropout is not None:
        set_dropout(config, dropout, *dropout_keys)
    if init == "random":
        return model_cls._from_config(config, attn_implementation="sdpa", **kwargs)
    try:  # safetensors only: a pickled pytorch_model.bin is never unpickled
        model, info = model_cls.from_pretrained(
            source,
            config=config,
            local_files_only=True,
            use_safetensors=True,
            attn_implementation="sdpa",
            output_loading_info=True,
            **kwargs,
        )
    except (OSError, ValueError, pickle.UnpicklingError) as err:
        raise FPTError(
            f"cannot load backbone weights from {source!r}: {str(err).splitlines()[0]} (fpt reads safetensors "
            f"weights only, never pickle: save the model with save_pretrained(..., safe_serialization=True))"
        ) from None
    check_loading(source, info["missing_keys"], info["unexpected_keys"], allowed_unused)
    return model


def check_loading(
    source: str, missing: Iterable[str], unexpected: Iterable[str], allowed_unused: tuple[str, ...]
) -> None:
    """Strict loading: no missing weight, and no unused checkpoint entry unless it matches an `allowed_unused`
    regular expression (matched at the start of the key, e.g. r"pooler\\." or r"h\\.\\d+\\.attn\\.masked_bias")."""
    missing = sorted(missing)
    unexpected = sorted(k for k in unexpected if not any(re.match(p, k) for p in allowed_unused))
    if missing or unexpected:
        raise FPTError(
            f"weights in {source} do not match the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def cache_dir() -> Path:
    """fpt's cache folder: $FPT_CACHE, else $XDG_CACHE_HOME/fpt, else ~/.cache/fpt."""
    if os.environ.get("FPT_CACHE"):
        return Path(os.environ["FPT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fpt"
