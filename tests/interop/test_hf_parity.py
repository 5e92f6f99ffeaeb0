"""Parity of our decoder models with HF GPT-2 and BLOOM, on tiny random models built locally.

Each case builds a small random HF model from a config (no downloads), converts it with our interop
code and compares logits (with right padding), loss, and greedy decoding with our KV cache; then the
other direction (ours -> HF) and the bit-identical round trip ours -> HF -> ours.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.interop.hf import (  # noqa: E402
    build_hf_model,
    family_for_config,
    get_family,
    load_hf_model_dir,
    save_hf_model_dir,
)
from lmforge.interop.hf.convert import hf_state_dict_to_ours, ours_to_hf_state_dict  # noqa: E402
from lmforge.models.config import ModelConfig  # noqa: E402
from lmforge.models.heads import IGNORE_INDEX  # noqa: E402
from lmforge.models.lm import build_model  # noqa: E402

ATOL, RTOL = 1e-5, 1e-4
VOCAB = 128


def _hf_config(model_type: str, num_heads: int, tie: bool = True):
    from transformers import BloomConfig, GPT2Config

    if model_type == "gpt2":
        return GPT2Config(
            vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=2, n_head=num_heads,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=tie,
            bos_token_id=None, eos_token_id=None,
        )  # fmt: skip
    return BloomConfig(
        vocab_size=VOCAB, hidden_size=48, n_layer=2, n_head=num_heads, tie_word_embeddings=tie,
    )  # fmt: skip


CASES = [
    pytest.param("gpt2", 4, True, id="gpt2-4heads"),
    pytest.param("gpt2", 4, False, id="gpt2-untied"),
    pytest.param("bloom", 4, True, id="bloom-4heads"),
    pytest.param("bloom", 6, True, id="bloom-6heads"),
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def _random_hf_model(model_type: str, num_heads: int, tie: bool):
    family = get_family(model_type)
    model = family.hf_model_class()(_hf_config(model_type, num_heads, tie)).float().eval()
    with torch.no_grad():  # HF zero-inits biases and unit-inits norms: randomise everything
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


def _ours_from_hf(hf_model):
    family = get_family(hf_model.config.model_type)
    cfg = family.config_from_hf(hf_model.config)
    model = build_model(cfg)
    model.load_state_dict(hf_state_dict_to_ours(family, hf_model.state_dict(), cfg))
    return model.eval()


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of lengths 12, 7, 3, right-padded with token 0; mask 1 on real tokens."""
    lengths = torch.tensor([12, 7, 3])
    input_ids = torch.randint(1, VOCAB, (3, 12))
    mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
    return input_ids * mask, mask


def _assert_logits_match(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> None:
    keep = mask.bool()
    torch.testing.assert_close(ours[keep], theirs[keep], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(("model_type", "num_heads", "tie"), CASES)
def test_logits_match_hf_with_padding(model_type, num_heads, tie):
    hf_model = _random_hf_model(model_type, num_heads, tie)
    model = _ours_from_hf(hf_model)
    input_ids, mask = _padded_batch()
    with torch.no_grad():
        ours = model(input_ids, attention_mask=mask).logits
        theirs = hf_model(input_ids, attention_mask=mask).logits
    _assert_logits_match(ours, theirs, mask)


@pytest.mark.parametrize(("model_type", "num_heads", "tie"), CASES)
def test_loss_matches_hf(model_type, num_heads, tie):
    hf_model = _random_hf_model(model_type, num_heads, tie)
    model = _ours_from_hf(hf_model)
    input_ids, mask = _padded_batch()
    hf_labels = input_ids.masked_fill(mask == 0, IGNORE_INDEX)
    # HF shifts inside; ours takes labels aligned with positions: target of t is token t + 1.
    our_labels = torch.cat([hf_labels[:, 1:], torch.full_like(hf_labels[:, :1], IGNORE_INDEX)], 1)
    with torch.no_grad():
        output = model(input_ids, attention_mask=mask, labels=our_labels)
        theirs = hf_model(input_ids, attention_mask=mask, labels=hf_labels).loss
    torch.testing.assert_close(output.loss_sum / output.num_targets, theirs, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(("model_type", "num_heads", "tie"), CASES)
def test_cached_greedy_decoding_matches_hf_recomputation(model_type, num_heads, tie):
    hf_model = _random_hf_model(model_type, num_heads, tie)
    model = _ours_from_hf(hf_model)
    prompt, num_new = torch.randint(0, VOCAB, (2, 5)), 6
    cache = model.new_cache(2, prompt.shape[1] + num_new)
    ours, theirs = prompt, prompt
    with torch.no_grad():
        step_input = prompt
        for _ in range(num_new):
            our_logits = model(step_input, cache=cache).logits[:, -1]
            hf_logits = hf_model(theirs, use_cache=False).logits[:, -1]
            torch.testing.assert_close(our_logits, hf_logits, atol=ATOL, rtol=RTOL)
            step_input = our_logits.argmax(-1, keepdim=True)
            ours = torch.cat([ours, step_input], 1)
            theirs = torch.cat([theirs, hf_logits.argmax(-1, keepdim=True)], 1)
    assert torch.equal(ours, theirs)


def _our_config(model_type: str, num_heads: int, tie: bool) -> ModelConfig:
    return get_family(model_type).config_from_hf(_hf_config(model_type, num_heads, tie))


def _random_ours(cfg: ModelConfig):
    model = build_model(cfg)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


@pytest.mark.parametrize(("model_type", "num_heads", "tie"), CASES)
def test_exported_model_matches_ours(model_type, num_heads, tie):
    model = _random_ours(_our_config(model_type, num_heads, tie))
    hf_model = build_hf_model(model.config, model.state_dict())
    input_ids, mask = _padded_batch()
    with torch.no_grad():
        ours = model(input_ids, attention_mask=mask).logits
        theirs = hf_model(input_ids, attention_mask=mask).logits
    _assert_logits_match(ours, theirs, mask)


@pytest.mark.parametrize(("model_type", "num_heads", "tie"), CASES)
def test_round_trip_through_hf_is_bit_identical(model_type, num_heads, tie):
    model = _random_ours(_our_config(model_type, num_heads, tie))
    cfg, family = model.config, family_for_config(model.config)
    assert family.MODEL_TYPE == model_type
    hf_model = family.hf_model_class()(family.config_to_hf(cfg))
    hf_model.load_state_dict(ours_to_hf_state_dict(family, model.state_dict(), cfg))
    back_cfg = family.config_from_hf(hf_model.config)
    back = hf_state_dict_to_ours(family, hf_model.state_dict(), back_cfg)
    original = model.state_dict()
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)


@pytest.mark.parametrize("model_type", ["gpt2", "bloom"])
def test_model_folder_round_trip(tmp_path, model_type):
    model = _random_ours(_our_config(model_type, 4, True))
    save_hf_model_dir(model, tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").is_file()
    cfg, state_dict = load_hf_model_dir(tmp_path / "hf")
    assert cfg == model.config
    assert all(torch.equal(state_dict[k], v) for k, v in model.state_dict().items())


def test_bare_body_pytorch_bin_folder_loads(tmp_path):
    """Checkpoints saved from GPT2Model (no "transformer." prefix, mask buffers) as a .bin file."""
    hf_model = _random_hf_model("gpt2", 4, True)
    hf_model.config.save_pretrained(tmp_path)
    body = {k.removeprefix("transformer."): v for k, v in hf_model.state_dict().items()}
    del body["lm_head.weight"]
    body["h.0.attn.bias"] = torch.ones(1, 1, 64, 64)
    torch.save(body, tmp_path / "pytorch_model.bin")
    cfg, state_dict = load_hf_model_dir(tmp_path)
    expected = _ours_from_hf(hf_model).state_dict()
    assert all(torch.equal(state_dict[k], v) for k, v in expected.items())


def test_bad_state_dict_reports_every_problem_at_once():
    hf_model = _random_hf_model("bloom", 4, True)
    cfg = get_family("bloom").config_from_hf(hf_model.config)
    hf_sd = dict(hf_model.state_dict())
    del hf_sd["transformer.ln_f.bias"]
    hf_sd["transformer.h.1.mlp.dense_h_to_4h.bias"] = torch.zeros(7)
    hf_sd["transformer.extra.weight"] = torch.zeros(2)
    with pytest.raises(LmforgeError) as error:
        hf_state_dict_to_ours(get_family("bloom"), hf_sd, cfg)
    message = str(error.value)
    for fragment in ("missing (1)", "mis-shaped (1)", "unmapped (1)", "transformer.extra.weight"):
        assert fragment in message


def test_unsupported_model_type_is_a_clear_error():
    with pytest.raises(LmforgeError, match="supported: gpt2, bloom"):
        get_family("llama")
