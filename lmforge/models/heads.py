"""Output heads and the token-level loss.

The language-modeling head projects hidden states onto the vocabulary, with the word embeddings
(tied) or its own matrix, optionally after a dense + activation + norm transform (BERT's MLM head)
and with an optional output bias (BERT's trained decoder bias, BART's fixed final_logits_bias). Its
products are functions of a weight it may not own (the tied embedding), which no module swap
reaches, so they call `kernels.linear` themselves, as the fused loss's hand-written backward pass
does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config.model import ModelConfig
from lmforge.kernels.linear import linear, matmul_nt, matmul_tn
from lmforge.layers.mlp import ACTIVATIONS
from lmforge.layers.norms import build_norm

IGNORE_INDEX = -100
"""Label of positions that carry no target (padding, unmasked tokens of MLM)."""


class HeadTransform(nn.Module):
    """dense -> activation -> norm, applied before the vocabulary projection (BERT, RoBERTa)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
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
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, T, D) -> (B, D)."""
        return torch.tanh(self.dense(hidden[:, 0]))


class TaskHead(nn.Module):
    """[dropout ->] linear onto `num_outputs` scores, the head of the downstream tasks: (B, D) ->
    (B, C) for sequence classification, (B, T, D) -> (B, T, C) for tagging, C = 2 (start, end)
    for extractive QA. Shaped as the reference class's head: `dropout` None where it has no
    dropout (BertForQuestionAnswering's qa_outputs, GPT2ForSequenceClassification's score), no
    bias where it has none (GPT-2's and BLOOM's score). Initialised like BERT's task heads:
    N(0, 0.02), zero bias."""

    def __init__(
        self, d_model: int, num_outputs: int, dropout: float | None, *, bias: bool = True
    ) -> None:
        super().__init__()
        self.dropout = nn.Identity() if dropout is None else nn.Dropout(dropout)
        self.proj = nn.Linear(d_model, num_outputs, bias=bias)
        nn.init.normal_(self.proj.weight, std=0.02)
        if bias:
            nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(hidden))


class LMHead(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.transform = HeadTransform(cfg) if cfg.head.kind == "transform" else None
        tied = cfg.tie_word_embeddings
        self.weight = None if tied else nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        if cfg.head.bias == "fixed":  # BART's final_logits_bias: in the state dict, not trained
            self.register_buffer("bias", torch.zeros(cfg.vocab_size))
        else:
            trained = cfg.head.bias == "trained"
            self.bias = nn.Parameter(torch.zeros(cfg.vocab_size)) if trained else None
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


# Logits per chunk of the fused loss, whatever the vocabulary: 2^24 fp32 values (64 MiB), or 2^22
# in bf16/fp16 (8 MiB); and per block of the fp32 softmax passes inside a chunk, 2^20 (4 MiB),
# small enough to stay in cache between the passes. Measured on the 2-core EPYC, 2048 rows:
# with V = 8192 in bf16, 82 ms for the loss and its gradients vs 111 ms for one block of 2^24
# (the (n, V) float copy of the logits alone was a third of it); fp32 is indifferent to the block.
_CHUNK_VALUES = 1 << 24
_LOW_PRECISION_CHUNK_VALUES = 1 << 22
_BLOCK_VALUES = 1 << 20


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
        matmul_dtype = _matmul_dtype(hidden)
        chunk_values = (
            _CHUNK_VALUES if matmul_dtype == torch.float32 else _LOW_PRECISION_CHUNK_VALUES
        )
        chunk = max(1, chunk_values // V)
        valid = labels != IGNORE_INDEX
        safe_labels = labels.clamp(min=0)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_bias = (
            None if bias is None else torch.zeros(V, dtype=torch.float32, device=weight.device)
        )
        weight_for_grad = weight.to(matmul_dtype)
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, N, chunk):
            rows = slice(start, min(start + chunk, N))
            h = hidden[rows]
            # The logits, in the matmul dtype, are overwritten by their own gradient: (n, V).
            grad_logits = linear(h, weight, bias)
            loss_sum += _softmax_minus_onehot_(
                grad_logits, safe_labels[rows], valid[rows], grad_bias=grad_bias
            )
            grad_hidden[rows] = matmul_nt(grad_logits, weight_for_grad.t()).to(hidden.dtype)
            grad_weight += matmul_tn(grad_logits, h.to(matmul_dtype))
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


def _softmax_minus_onehot_(
    logits: torch.Tensor,
    labels: torch.Tensor,
    valid: torch.Tensor,
    *,
    grad_bias: torch.Tensor | None,
) -> torch.Tensor:
    """Overwrite logits (n, V) with softmax(logits) - onehot(labels) (rows with no target: 0), add
    its column sums to `grad_bias` (fp32, (V,)) and return the summed cross-entropy; labels, valid:
    (n,). Block by block in fp32, one exp pass per block: softmax = exp(x - max) / sum, lse =
    log(sum) + max; lower-precision logits go through one reused fp32 block buffer."""
    n, V = logits.shape
    block = min(n, max(1, _BLOCK_VALUES // V))
    is_fp32 = logits.dtype == torch.float32
    buffer = None if is_fp32 else torch.empty(block, V, dtype=torch.float32, device=logits.device)
    loss_sum = torch.zeros((), dtype=torch.float32, device=logits.device)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        x = logits[rows] if is_fp32 else buffer[: rows.stop - start].copy_(logits[rows])
        y, keep = labels[rows, None], valid[rows]
        target = x.gather(1, y).squeeze(1)
        row_max = x.amax(dim=-1, keepdim=True)
        probs = x.sub_(row_max).exp_()
        total = probs.sum(dim=-1, keepdim=True)
        lse = (total.log() + row_max).squeeze(1)
        loss_sum += torch.where(keep, lse - target, 0.0).sum()
        probs.div_(total).scatter_add_(1, y, torch.full_like(target[:, None], -1.0))
        dropped = (~keep).nonzero().squeeze(1)
        if dropped.numel():
            probs.index_fill_(0, dropped, 0.0)  # rows without a target: a few, not a full pass
        if grad_bias is not None:
            grad_bias += probs.sum(0)
        if not is_fp32:
            logits[rows] = probs
    return loss_sum


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
