"""Properties every family must have, and every preset building on the meta device."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lmforge.config.model import AttentionConfig, ModelConfig, NormConfig, PositionConfig
from lmforge.config.presets import PRESETS, get_preset
from lmforge.models.lm import build_model


def tiny(name: str, **changes) -> ModelConfig:
    base = get_preset(name)
    return dataclasses.replace(
        base, vocab_size=96, d_model=32, num_heads=4, num_layers=2, d_ff=64, **changes
    )


# One test config per family and per distinctive wiring of the block library.
VARIANTS = {
    "gpt2": tiny("gpt2-tiny"),
    "bloom": tiny("bloom-tiny"),
    "rope-decoder": tiny("gpt2-tiny", position=PositionConfig(kind="rope")),
    "llama": tiny("llama-tiny"),
    "llama-grouped-query": tiny(
        "llama-tiny",
        attention=AttentionConfig(score_scale="inverse_sqrt", bias=False, num_kv_heads=2),
    ),
    "post-norm-encoder": tiny("gpt2-tiny", family="encoder", norm=NormConfig(placement="post")),
    "bert": tiny("bert-tiny"),
    "roberta": tiny("roberta-tiny"),
    "t5-like-encoder-decoder": tiny(
        "gpt2-tiny",
        family="encoder_decoder",
        norm=NormConfig(kind="rmsnorm", bias=False),
        position=PositionConfig(kind="relative_bias"),
    ),
    "t5": tiny("t5-tiny", num_decoder_layers=2),
    "bart": tiny("bart-tiny", num_decoder_layers=2),
}


def _forward(model, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    if model.config.family == "encoder_decoder":
        return model(
            ids, decoder_input_ids=ids, attention_mask=mask, decoder_attention_mask=mask
        ).logits
    return model(ids, attention_mask=mask).logits


@pytest.mark.parametrize("name", [n for n, c in VARIANTS.items() if c.family == "decoder"])
def test_causal_models_ignore_future_tokens(name: str) -> None:
    model = build_model(VARIANTS[name]).eval()
    ids = torch.randint(0, 96, (2, 12))
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 96
    torch.testing.assert_close(_forward(model, ids)[:, :8], _forward(model, changed)[:, :8])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_appended_padding_does_not_change_outputs(name: str) -> None:
    model = build_model(VARIANTS[name]).eval()
    ids = torch.randint(0, 96, (2, 10))
    padded = torch.cat([ids, torch.zeros(2, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(2, 10), torch.zeros(2, 5)], dim=1).long()
    torch.testing.assert_close(
        _forward(model, padded, mask)[:, :10], _forward(model, ids), atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize("name", [n for n, c in VARIANTS.items() if c.family == "decoder"])
def test_cached_decoding_equals_full_recomputation(name: str) -> None:
    model = build_model(VARIANTS[name]).eval()
    ids = torch.randint(0, 96, (2, 12))
    full = model(ids).logits
    cache = model.new_cache(2, 12)
    parts = [model(ids[:, :7], cache=cache).logits]
    parts += [model(ids[:, t : t + 1], cache=cache).logits for t in range(7, 12)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


def test_loss_counts_only_labelled_positions() -> None:
    model = build_model(VARIANTS["gpt2"]).eval()
    ids = torch.randint(0, 96, (2, 8))
    labels = ids.clone()
    labels[:, :3] = -100
    output = model(ids, labels=labels)
    logits = model(ids).logits
    expected = torch.nn.functional.cross_entropy(
        logits[:, 3:].reshape(-1, 96), ids[:, 3:].reshape(-1)
    )
    assert output.num_targets.item() == 10
    torch.testing.assert_close(output.loss, expected)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_on_meta(name: str) -> None:
    model = build_model(get_preset(name), device="meta")
    assert model.num_parameters() > 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt2-small", 124_439_808),  # HF's reported parameter counts
        ("bloom-560m", 559_214_592),
        # BertForMaskedLM / RobertaForMaskedLM have no pooler (add_pooling_layer=False); counted
        # with transformers 5 from BertConfig() and roberta-base's config.json values, on meta.
        # Our EncoderModel keeps the pooler: + 768 * 768 + 768 = 590_592.
        ("bert-base", 109_514_298 + 590_592),
        ("roberta-base", 124_697_433 + 590_592),
        # T5ForConditionalGeneration / BartForConditionalGeneration from config_to_hf(preset), on
        # meta, with transformers 5 (T5 with its own lm_head, as v1.1: google/t5-v1_1-small's
        # 6 heads of 64, 77 M). BART's final_logits_bias is a buffer there, as our lm_head.bias.
        ("t5-small", 76_961_152),
        ("bart-base", 139_420_416),
    ],
)
def test_reference_shapes_have_the_published_parameter_count(name: str, expected: int) -> None:
    assert build_model(get_preset(name), device="meta").num_parameters() == expected


def test_t5_init_scales_queries_and_starts_near_uniform_predictions() -> None:
    """T5's init folds the missing 1/sqrt(d_head) score scale into the query rows, and its unit
    embeddings through the fan-in head give logits of about unit scale."""
    cfg = get_preset("t5-small")
    model = build_model(dataclasses.replace(cfg, num_layers=2, num_decoder_layers=2))
    qkv = model.encoder.blocks[0].self_attn.qkv_proj.weight
    D, Dh, A = cfg.d_model, cfg.d_head, cfg.d_attention  # query rows: the first A
    assert qkv[:A].std().item() == pytest.approx((D * Dh) ** -0.5, rel=0.02)
    assert qkv[A:].std().item() == pytest.approx(D**-0.5, rel=0.02)
    ids = torch.randint(0, cfg.vocab_size, (2, 16))
    loss = model(ids, decoder_input_ids=ids, labels=ids).loss.item()
    assert abs(loss - math.log(cfg.vocab_size)) < 1.0


def test_encoder_uses_segment_ids_and_padding() -> None:
    model = build_model(VARIANTS["bert"]).eval()
    ids = torch.randint(5, 96, (2, 10))
    segments = torch.zeros_like(ids)
    segments[:, 5:] = 1
    plain = model(ids).logits
    assert not torch.allclose(model(ids, segment_ids=segments).logits, plain)
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(2, 10), torch.zeros(2, 3)], dim=1).long()
    torch.testing.assert_close(model(padded, attention_mask=mask).logits[:, :10], plain)


def test_pooler_maps_the_first_token_through_tanh() -> None:
    model = build_model(VARIANTS["bert"]).eval()
    hidden = model.hidden_states(torch.randint(0, 96, (3, 7)))
    pooled = model.pooler(hidden)
    assert pooled.shape == (3, 32)
    torch.testing.assert_close(pooled, torch.tanh(model.pooler.dense(hidden[:, 0])))


def test_invalid_config_names_the_fields() -> None:
    with pytest.raises(ValueError, match="d_model .* divisible by model.num_heads"):
        dataclasses.replace(get_preset("gpt2-tiny"), num_heads=3)


@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_linear_cross_entropy_matches_autograd_reference(with_bias: bool) -> None:
    from lmforge.models import heads

    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    bias = torch.randn(50, requires_grad=True) if with_bias else None
    labels = torch.randint(0, 50, (37,))
    labels[::5] = -100
    original = heads._CHUNK_VALUES, heads._BLOCK_VALUES
    heads._CHUNK_VALUES, heads._BLOCK_VALUES = 50 * 8, 50 * 3  # chunks of 8 rows, blocks of 3
    try:
        loss, count = heads.linear_cross_entropy(hidden, weight, bias, labels)
    finally:
        heads._CHUNK_VALUES, heads._BLOCK_VALUES = original
    (2.5 * loss).backward()
    fused = [hidden.grad, weight.grad] + ([bias.grad] if with_bias else [])
    for tensor in [hidden, weight] + ([bias] if with_bias else []):
        tensor.grad = None
    reference = torch.nn.functional.cross_entropy(
        torch.nn.functional.linear(hidden, weight, bias), labels, reduction="sum"
    )
    (2.5 * reference).backward()
    expected = [hidden.grad, weight.grad] + ([bias.grad] if with_bias else [])
    assert count.item() == (labels != -100).sum().item()
    torch.testing.assert_close(loss, reference)
    for actual, wanted in zip(fused, expected, strict=True):
        torch.testing.assert_close(actual, wanted)


@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_linear_cross_entropy_in_bf16_autocast_matches_the_unfused_loss(
    with_bias: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under bf16 autocast the products run in bf16 and the softmax in fp32, block by block."""
    from lmforge.models import heads

    monkeypatch.setattr(heads, "_LOW_PRECISION_CHUNK_VALUES", 50 * 8)
    monkeypatch.setattr(heads, "_BLOCK_VALUES", 50 * 3)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    bias = torch.randn(50, requires_grad=True) if with_bias else None
    params = [hidden, weight] + ([bias] if with_bias else [])
    labels = torch.randint(0, 50, (37,))
    labels[::5] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = heads.linear_cross_entropy(hidden, weight, bias, labels)
        logits = torch.nn.functional.linear(hidden, weight, bias)  # bf16, as autocast makes it
    fused = torch.autograd.grad(loss, params)
    reference = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
    expected = torch.autograd.grad(reference, params)
    torch.testing.assert_close(loss, reference, rtol=1e-3, atol=1e-3)
    for actual, wanted in zip(fused, expected, strict=True):
        assert actual.dtype == torch.float32
        torch.testing.assert_close(actual, wanted, rtol=0.02, atol=0.02 * wanted.abs().max().item())
