"""The three model families, built from one block library, and `build_model(config)`.

DecoderModel         token_embed -> decoder (causal) -> lm_head            GPT-2, BLOOM
EncoderModel         token_embed -> encoder (bidirectional) -> lm_head      BERT, RoBERTa
EncoderDecoderModel  token_embed -> encoder ; token_embed -> decoder (causal, cross-attending
                     to the encoder output) -> lm_head                       T5, BART

Labels are aligned with positions (the target of position t is labels[:, t]): objectives shift, the
model does not. With labels, the loss is computed on labelled positions only, so an MLM head never
projects the ~85% of positions that carry no target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lmforge.config.model import ModelConfig
from lmforge.kernels import apply_cpu_kernels
from lmforge.layers.kv_cache import KVCache
from lmforge.layers.norms import LayerNorm, RMSNorm
from lmforge.models.heads import IGNORE_INDEX, LMHead, Pooler, token_loss_sum
from lmforge.models.stacks import Stack


@dataclass
class ModelOutput:
    logits: torch.Tensor | None = None
    """(B, T, V) when no labels were given; None when the loss was computed instead."""
    loss_sum: torch.Tensor | None = None
    """Summed cross-entropy over labelled positions (scalar)."""
    num_targets: torch.Tensor | None = None
    """Number of labelled positions (scalar int64)."""
    num_correct: torch.Tensor | None = None
    """Labelled positions whose most likely token is the label (scalar int64); computed only
    without gradients (evaluation), where the logits are formed anyway."""

    @property
    def loss(self) -> torch.Tensor:
        assert self.loss_sum is not None and self.num_targets is not None
        return self.loss_sum / self.num_targets.clamp(min=1)


class LanguageModel(nn.Module):
    """What the families share: word embeddings, the LM head, the loss, initialisation."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.lm_head = LMHead(cfg)

    def stacks(self) -> list[Stack]:
        raise NotImplementedError

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) token ids -> final hidden states (B, T, D) of the stack a task head reads, the
        first of `stacks()`: the decoder of decoder models, the encoder of the others.

        attention_mask: (B, T), 1 = token. segment_ids: (B, T), read by models with segment
        embeddings (BERT, RoBERTa) and ignored by all others, whatever their family.
        """
        return self.stacks()[0](
            self.token_embed(input_ids), attention_mask=attention_mask, segment_ids=segment_ids
        )

    def _output(self, hidden: torch.Tensor, labels: torch.Tensor | None) -> ModelOutput:
        if labels is None:
            return ModelOutput(logits=self.lm_head(hidden, self.token_embed.weight))
        hidden, labels = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
        if self.config.head.kind == "transform":
            # Sparse targets (MLM): project only the labelled positions onto the vocabulary.
            keep = (labels != IGNORE_INDEX).nonzero().squeeze(1)
            hidden, labels = hidden.index_select(0, keep), labels.index_select(0, keep)
        if not torch.is_grad_enabled():
            logits = self.lm_head(hidden, self.token_embed.weight)  # (N, V)
            loss_sum, num_targets = token_loss_sum(logits, labels)
            num_correct = (logits.argmax(dim=-1) == labels).sum()  # IGNORE_INDEX never matches
            return ModelOutput(loss_sum=loss_sum, num_targets=num_targets, num_correct=num_correct)
        loss_sum, num_targets = self.lm_head.loss_sum(hidden, labels, self.token_embed.weight)
        return ModelOutput(loss_sum=loss_sum, num_targets=num_targets)

    def num_parameters(self, *, include_embeddings: bool = True) -> int:
        total = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            total -= self.token_embed.weight.numel()
            total -= sum(p.numel() for stack in self.stacks() for p in stack.positions.parameters())
        return total

    def unused_parameter_names(self) -> list[str]:
        """Parameters the language-modeling forward never touches (data parallelism must not wait
        for their gradients)."""
        return []

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty KV cache for incremental decoding with the decoder stack."""
        weight = self.token_embed.weight
        cfg = self.config
        return KVCache(
            num_layers=len(self.stacks()[-1].blocks),
            batch_size=batch_size,
            num_heads=cfg.num_kv_heads,  # grouped-query attention caches fewer heads
            max_len=max_len,
            d_head=cfg.d_head,
            dtype=weight.dtype,
            device=weight.device,
        )

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2 initialisation (Radford et al. 2019, section 2.3): N(0, init_std) weights, zero
        biases, unit norms, and residual output projections scaled by 1/sqrt(2 * num_layers).
        With config.init == "t5", T5's scheme instead (`_init_t5_weights`)."""
        if self.config.init == "t5":
            self._init_t5_weights()
            return
        std = self.config.init_std
        num_layers = sum(len(stack.blocks) for stack in self.stacks())
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                scaled = name.endswith(("out_proj", "down_proj"))
                nn.init.normal_(
                    module.weight, std=std / math.sqrt(2 * num_layers) if scaled else std
                )
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, (LayerNorm, RMSNorm)):
                module.reset_parameters()
        for stack in self.stacks():
            stack.positions.reset_parameters(std)
        if self.lm_head.weight is not None:
            nn.init.normal_(self.lm_head.weight, std=std)
        if self.lm_head.bias is not None:
            nn.init.zeros_(self.lm_head.bias)

    @torch.no_grad()
    def _init_t5_weights(self) -> None:
        """T5's initialisation (Mesh TensorFlow; transformers' T5PreTrainedModel._init_weights
        with initializer_factor 1): every projection N(0, fan_in^-1/2), queries additionally by
        d_head^-1/2 (the 1/sqrt(d_head) score scale T5 leaves out of attention), embeddings N(0, 1),
        relative biases N(0, d_model^-1/2), unit norms. The untied head is a fan-in dense layer
        too, N(0, d_model^-1/2), as Mesh TensorFlow's `logits` layer (transformers uses N(0, 1),
        which starts with logits of std sqrt(d_model)). GPT-2's 0.02 everywhere with unscaled
        scores trains far slower or diverges."""
        cfg = self.config
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=module.in_features**-0.5)
                if name.endswith("qkv_proj"):  # rows [q; k; v]: scale the query rows
                    module.weight[: cfg.d_attention] *= cfg.d_head**-0.5
                elif name.endswith("cross_attn.q_proj"):
                    module.weight *= cfg.d_head**-0.5
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (LayerNorm, RMSNorm)):
                module.reset_parameters()
        nn.init.normal_(self.token_embed.weight, std=1.0)
        for stack in self.stacks():
            stack.positions.reset_parameters(cfg.d_model**-0.5)
        if self.lm_head.weight is not None:
            nn.init.normal_(self.lm_head.weight, std=cfg.d_model**-0.5)
        if self.lm_head.bias is not None:
            nn.init.zeros_(self.lm_head.bias)


class DecoderModel(LanguageModel):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.decoder = Stack(cfg, cfg.num_layers, is_causal=True, has_cross_attention=False)

    def stacks(self) -> list[Stack]:
        return [self.decoder]

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> ModelOutput:
        """input_ids: (B, T); attention_mask: (B, S) over cached + new positions; labels: (B, T)."""
        hidden = self.decoder(
            self.token_embed(input_ids),
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
        )
        return self._output(hidden, labels)


class EncoderModel(LanguageModel):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.encoder = Stack(cfg, cfg.num_layers, is_causal=False, has_cross_attention=False)
        self.pooler = Pooler(cfg)

    def stacks(self) -> list[Stack]:
        return [self.encoder]

    def unused_parameter_names(self) -> list[str]:
        # The pooler serves classification tasks; masked language modeling does not use it.
        return [f"pooler.{name}" for name, _ in self.pooler.named_parameters()]

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """input_ids, attention_mask (1 = real token), segment_ids, labels: (B, T)."""
        hidden = self.hidden_states(
            input_ids, attention_mask=attention_mask, segment_ids=segment_ids
        )
        return self._output(hidden, labels)


class EncoderDecoderModel(LanguageModel):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        num_decoder_layers = cfg.num_decoder_layers or cfg.num_layers
        self.encoder = Stack(cfg, cfg.num_layers, is_causal=False, has_cross_attention=False)
        self.decoder = Stack(cfg, num_decoder_layers, is_causal=True, has_cross_attention=True)

    def stacks(self) -> list[Stack]:
        return [self.encoder, self.decoder]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        *,
        decoder_input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> ModelOutput:
        """Encode `input_ids` (or reuse `memory`, (B, S, D)), then decode `decoder_input_ids`."""
        if memory is None and (cache is None or cache.cross[0] is None):
            assert input_ids is not None, "give input_ids or a precomputed encoder output"
            memory = self.hidden_states(input_ids, attention_mask=attention_mask)
        hidden = self.decoder(
            self.token_embed(decoder_input_ids),
            attention_mask=decoder_attention_mask,
            cache=cache,
            memory=memory,
            memory_mask=attention_mask,
        )
        return self._output(hidden, labels)


MODEL_CLASSES: dict[str, type[LanguageModel]] = {
    "decoder": DecoderModel,
    "encoder": EncoderModel,
    "encoder_decoder": EncoderDecoderModel,
}


def build_model(cfg: ModelConfig, *, device: torch.device | str = "cpu") -> LanguageModel:
    """Build on the meta device (no memory, no wasted init), materialise on `device`, initialise,
    and apply this machine's CPU kernel choices (`kernels.apply_cpu_kernels`; the model classes
    themselves are plain PyTorch).

    With device="meta" the model stays abstract: shapes and parameter counts only.
    """
    with torch.device("meta"):
        model = MODEL_CLASSES[cfg.family](cfg)
    if str(device) != "meta":
        model.to_empty(device=device)
        model.init_weights()
    return apply_cpu_kernels(model)
