"""Output heads and the token-level loss.

The language-modeling head projects hidden states onto the vocabulary, with the word embeddings
(tied) or its own matrix, optionally after a dense + activation + norm transform (BERT's MLM head)
and with an optional output bias (BERT's decoder bias, BART's final_logits_bias).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.layers.linear import Linear, linear, matmul_nt, matmul_tn
from lmforge.layers.mlp import ACTIVATIONS
from lmforge.layers.norms import build_norm
from lmforge.models.config import ModelConfig

IGNORE_INDEX = -100
"""Label of positions that carry no target (padding, unmasked tokens of MLM)."""


class HeadTransform(nn.Module):
    """dense -> activation -> norm, applied before the vocabulary projection (BERT, RoBERTa)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = Linear(cfg.d_model, cfg.d_model)
        self.activation = ACTIVATIONS[cfg.mlp.activation]
        self.norm = build_norm(cfg.norm, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.activation(self.dense(x)))


class Pooler(nn.Module):
    """dense + tanh on the first token's hidden state (BERT's pooler, for sequence classification).

    Pretraining without next-sentence prediction (RoBERTa, our MLM) never trains it; it is kept so
    that BERT checkpoints round-trip and classification tasks have the reference input.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = Linear(cfg.d_model, cfg.d_model)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, T, D) -> (B, D)."""
        return torch.tanh(self.dense(hidden[:, 0]))


class TaskHead(nn.Module):
    """dropout -> linear onto `num_outputs` scores, the head of the downstream tasks: (B, D) ->
    (B, C) for sequence classification, (B, T, D) -> (B, T, C) for tagging, C = 2 (start, end)
    for extractive QA. Initialised like BERT's task heads: N(0, 0.02), zero bias."""

    def __init__(self, d_model: int, num_outputs: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = Linear(d_model, num_outputs)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(hidden))


class LMHead(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.transform = HeadTransform(cfg) if cfg.head.kind == "transform" else None
        tied = cfg.tie_word_embeddings
        self.weight = None if tied else nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if cfg.head.bias else None
        # T5 v1.0 rescales before its tied projection (Mesh TensorFlow's transformer).
        self.scale = cfg.d_model**-0.5 if cfg.head.logit_scale == "inverse_sqrt_d_model" else None

    def forward(self, hidden: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
        """hidden: (..., D) -> logits (..., V); `embedding_weight` (V, D) is used when tied."""
        if self.transform is not None:
            hidden = self.transform(hidden)
        if self.scale is not None:
            hidden = hidden * self.scale
        weight = embedding_weight if self.weight is None else self.weight
        return linear(hidden, weight, self.bias)

    def loss_sum(
        self, hidden: torch.Tensor, labels: torch.Tensor, embedding_weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy of (N, D) hidden states against (N,) labels, and the target
        count."""
        if self.transform is not None:
            hidden = self.transform(hidden)
        if self.scale is not None:
            hidden = hidden * self.scale
        weight = embedding_weight if self.weight is None else self.weight
        return linear_cross_entropy(hidden, weight, self.bias, labels)


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over positions whose label is not IGNORE_INDEX, and their count.

    logits: (N, V), labels: (N,). Summing (not averaging) lets the trainer divide by the number of
    target tokens of the whole optimizer step, across accumulation and ranks.
    """
    loss_sum = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, (labels != IGNORE_INDEX).sum()


# Rows of logits per chunk of the fused loss: 2^24 fp32 values (64 MiB) whatever the vocabulary.
_CHUNK_VALUES = 1 << 24


class _LinearCrossEntropy(torch.autograd.Function):
    """Output projection + cross-entropy whose gradients are computed in the forward pass.

    d(sum of losses)/d(logits) = softmax(logits) - onehot(label) is formed in place over the
    logits just computed, then multiplied into the gradients of hidden, weight and bias at once.
    Compared with F.linear + F.cross_entropy this skips the log-softmax backward pass, the
    zero-filled (N, V) gradient buffer of the NLL backward and keeping the logits for backward;
    chunking rows bounds memory at 64 MiB of logits for any vocabulary (the idea of Liger Kernel's
    FusedLinearCrossEntropy and of Wijmans et al. 2024, "Cut Your Losses").
    Under autocast the matmuls run in the autocast dtype and the softmax in float32.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels):  # noqa: ANN001, ANN205
        N, V = hidden.shape[0], weight.shape[0]
        chunk = max(1, _CHUNK_VALUES // V)
        valid = labels != IGNORE_INDEX
        safe_labels = labels.clamp(min=0)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_bias = (
            None if bias is None else torch.zeros(V, dtype=torch.float32, device=weight.device)
        )
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, N, chunk):
            rows = slice(start, min(start + chunk, N))
            h, y, keep = hidden[rows], safe_labels[rows], valid[rows]
            logits = linear(h, weight, bias).float()  # (n, V)
            target = logits.gather(1, y[:, None]).squeeze(1)
            # One pass of exp, in place: softmax = exp(x - max) / sum, lse = log(sum) + max.
            row_max = logits.amax(dim=-1, keepdim=True)
            grad_logits = logits.sub_(row_max).exp_()
            total = grad_logits.sum(dim=-1, keepdim=True)
            lse = (total.log() + row_max).squeeze(1)
            loss_sum += torch.where(keep, lse - target, 0.0).sum()
            grad_logits.div_(total)  # softmax
            grad_logits.scatter_add_(1, y[:, None], torch.full_like(target[:, None], -1.0))
            grad_logits.mul_(keep[:, None])
            g = grad_logits.to(_matmul_dtype(h))
            grad_hidden[rows] = matmul_nt(g, weight.to(g.dtype).t()).to(hidden.dtype)
            grad_weight += matmul_tn(g, h.to(g.dtype)).float()
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return loss_sum

    @staticmethod
    def backward(ctx, grad_output):  # noqa: ANN001, ANN205
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        grad_bias = None if grad_bias is None else (grad_bias * grad_output).to(bias_dtype)
        return (
            grad_hidden * grad_output.to(grad_hidden.dtype),
            (grad_weight * grad_output).to(weight_dtype),
            grad_bias,
            None,
        )


def _matmul_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a matmul in (the tensor's own dtype outside autocast)."""
    device_type = tensor.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return tensor.dtype


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of F.linear(hidden, weight, bias) against labels, and the count.

    hidden: (N, D), weight: (V, D), labels: (N,). The fused path is taken when gradients are needed.
    """
    num_targets = (labels != IGNORE_INDEX).sum()
    needs_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if not needs_grad:
        return token_loss_sum(linear(hidden, weight, bias), labels)[0], num_targets
    return _LinearCrossEntropy.apply(hidden, weight, bias, labels), num_targets
