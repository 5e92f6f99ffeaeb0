"""Parity of our models with HF GPT-2, BLOOM, Llama, BERT, RoBERTa, T5 and BART, on tiny random
models.

Each case builds a small random HF model from a config (no downloads), converts it with our interop
code and compares logits (with right padding and attention masks), loss, and greedy decoding with
our KV cache (decoders and seq2seq); then the other direction (ours -> HF) and the bit-identical
round trip ours -> HF -> ours. Both calls take the same keyword arguments (input_ids,
attention_mask and, for seq2seq, decoder_input_ids), so one batch drives every family.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from lmforge.config.model import ModelConfig  # noqa: E402
from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.interop.hf import (  # noqa: E402
    build_hf_model,
    family_for_config,
    get_family,
    load_hf_model_dir,
    save_hf_model_dir,
)
from lmforge.interop.hf.convert import (  # noqa: E402
    extra_keys,
    hf_state_dict_to_ours,
    ours_to_hf_state_dict,
)
from lmforge.models.heads import IGNORE_INDEX  # noqa: E402
from lmforge.models.lm import build_model  # noqa: E402

ATOL, RTOL = 1e-5, 1e-4
VOCAB = 128
PAD = {"roberta": 1}
"""Pad token per model type (0 elsewhere); RoBERTa's position offset is pad + 1."""
UNEXPECTED = {"bert": {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}}
"""Keys transformers' pretraining class reports unexpected in our export, per model type: BERT's
pooler, which BertForMaskedLM lacks and the export keeps for BertForSequenceClassification, as
bert-base-uncased's checkpoint does."""


def _hf_config(model_type: str, num_heads: int, variant: str = ""):
    import transformers as tf

    tie = variant not in ("untied", "narrow")
    if model_type == "gpt2":
        return tf.GPT2Config(
            vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=2, n_head=num_heads,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=tie,
            bos_token_id=None, eos_token_id=None,
        )  # fmt: skip
    if model_type == "bloom":
        return tf.BloomConfig(
            vocab_size=VOCAB, hidden_size=48, n_layer=2, n_head=num_heads, tie_word_embeddings=tie,
        )  # fmt: skip
    if model_type == "llama":
        # "gqa": 6 query heads sharing 2 key/value heads; "bias": attention and MLP biases (both
        # off in Llama, on in some derivatives). A small rope_theta turns the rotations fast, so
        # a wrong pairing of dimensions shows at short lengths.
        return tf.LlamaConfig(
            vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=num_heads, num_key_value_heads=2 if variant == "gqa" else None,
            max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=tie,
            rope_parameters={"rope_type": "default", "rope_theta": 100.0},
            attention_bias=variant == "bias", mlp_bias=variant == "bias", pad_token_id=0,
            bos_token_id=None, eos_token_id=None,
        )  # fmt: skip
    if model_type in ("bert", "roberta"):
        config_class = tf.BertConfig if model_type == "bert" else tf.RobertaConfig
        return config_class(
            vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=num_heads,
            intermediate_size=80, max_position_embeddings=64 + PAD.get(model_type, -1) + 1,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, tie_word_embeddings=tie,
            pad_token_id=PAD.get(model_type, 0), type_vocab_size=2 if model_type == "bert" else 1,
        )  # fmt: skip
    if model_type == "t5":  # v1.1 (gated-gelu, untied) or v1.0 (relu, tied, scaled logits)
        return tf.T5Config(
            # "narrow": heads of 8 on d_model 48, as google/t5-v1_1-small's 6 x 64 on 512.
            vocab_size=VOCAB, d_model=48, d_kv=8 if variant == "narrow" else 48 // num_heads,
            d_ff=80, num_layers=2,
            num_decoder_layers=3, num_heads=num_heads, dropout_rate=0.0,
            relative_attention_num_buckets=8, relative_attention_max_distance=16,
            feed_forward_proj="relu" if tie else "gated-gelu", tie_word_embeddings=tie,
            decoder_start_token_id=0,
        )  # fmt: skip
    assert model_type == "bart"
    return tf.BartConfig(
        vocab_size=VOCAB, d_model=48, encoder_layers=2, decoder_layers=3,
        encoder_attention_heads=num_heads, decoder_attention_heads=num_heads,
        encoder_ffn_dim=80, decoder_ffn_dim=80, max_position_embeddings=64, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, scale_embedding=variant == "scaled",
        pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3,
        forced_eos_token_id=None,
    )  # fmt: skip


CASES = [
    pytest.param("gpt2", 4, "", id="gpt2-4heads"),
    pytest.param("gpt2", 4, "untied", id="gpt2-untied"),
    pytest.param("bloom", 4, "", id="bloom-4heads"),
    pytest.param("bloom", 6, "", id="bloom-6heads"),
    pytest.param("llama", 4, "", id="llama-tied"),
    pytest.param("llama", 4, "untied", id="llama-untied"),
    pytest.param("llama", 6, "gqa", id="llama-grouped-query"),
    pytest.param("llama", 4, "bias", id="llama-biases"),
    pytest.param("bert", 4, "", id="bert"),
    pytest.param("roberta", 4, "", id="roberta"),
    pytest.param("t5", 4, "untied", id="t5-v1.1"),
    pytest.param("t5", 6, "", id="t5-v1.0-tied"),
    pytest.param("t5", 4, "narrow", id="t5-v1.1-narrow-heads"),
    pytest.param("bart", 4, "", id="bart"),
    pytest.param("bart", 4, "scaled", id="bart-scaled-embedding"),
]
DECODING_CASES = [c for c in CASES if c.values[0] not in ("bert", "roberta")]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def _randomise(model):
    with torch.no_grad():  # HF zero-inits biases and unit-inits norms: randomise everything
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
        for name, buffer in model.named_buffers():
            if name.endswith("final_logits_bias"):  # BART's output bias is a buffer
                buffer.add_(torch.randn_like(buffer) * 0.05)
    return model.eval()


def _random_hf_model(model_type: str, num_heads: int, variant: str):
    family = get_family(model_type)
    config = _hf_config(model_type, num_heads, variant)
    return _randomise(family.hf_model_class()(config).float())


def _ours_from_hf(hf_model):
    family = get_family(hf_model.config.model_type)
    cfg = family.config_from_hf(hf_model.config)
    model = build_model(cfg)
    model.load_state_dict(hf_state_dict_to_ours(family, hf_model.state_dict(), cfg))
    return model.eval()


def _batch(model_type: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Keyword arguments for both models, and the (B, T) mask of output positions to compare.

    Three rows of lengths 12, 7, 3, right-padded with the pad token; seq2seq models also get 5
    decoder tokens per row (all compared: the decoder is causal and unpadded).
    """
    lengths = torch.tensor([12, 7, 3])
    pad = PAD.get(model_type, 0)
    input_ids = torch.randint(4, VOCAB, (3, 12))
    mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
    batch = {"input_ids": input_ids.masked_fill(mask == 0, pad), "attention_mask": mask}
    if model_type in ("t5", "bart"):
        batch["decoder_input_ids"] = torch.randint(4, VOCAB, (3, 5))
        return batch, torch.ones(3, 5, dtype=torch.long)
    return batch, mask


def _assert_logits_match(ours: torch.Tensor, theirs: torch.Tensor, keep: torch.Tensor) -> None:
    keep = keep.bool()
    torch.testing.assert_close(ours[keep], theirs[keep], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(("model_type", "num_heads", "variant"), CASES)
def test_logits_match_hf_with_padding(model_type, num_heads, variant):
    hf_model = _random_hf_model(model_type, num_heads, variant)
    model = _ours_from_hf(hf_model)
    batch, keep = _batch(model_type)
    with torch.no_grad():
        ours = model(**batch).logits
        theirs = hf_model(**batch).logits
    _assert_logits_match(ours, theirs, keep)


def test_bert_segment_ids_match_token_type_ids():
    hf_model = _random_hf_model("bert", 4, "")
    model = _ours_from_hf(hf_model)
    batch, keep = _batch("bert")
    segments = (torch.arange(12)[None, :] >= 5).long().expand(3, -1)
    with torch.no_grad():
        ours = model(**batch, segment_ids=segments).logits
        theirs = hf_model(**batch, token_type_ids=segments).logits
    _assert_logits_match(ours, theirs, keep)


@pytest.mark.parametrize(("model_type", "num_heads", "variant"), CASES)
def test_loss_matches_hf(model_type, num_heads, variant):
    hf_model = _random_hf_model(model_type, num_heads, variant)
    model = _ours_from_hf(hf_model)
    batch, keep = _batch(model_type)
    targets = batch.get("decoder_input_ids", batch["input_ids"])
    hf_labels = targets.masked_fill(keep == 0, IGNORE_INDEX)
    our_labels = hf_labels
    if model_type in ("gpt2", "bloom", "llama"):
        # HF shifts inside causal LMs; ours takes labels aligned with positions (target of t is
        # token t + 1). MLM and seq2seq labels are aligned in both.
        ignore = torch.full_like(hf_labels[:, :1], IGNORE_INDEX)
        our_labels = torch.cat([hf_labels[:, 1:], ignore], 1)
    with torch.no_grad():
        output = model(**batch, labels=our_labels)
        theirs = hf_model(**batch, labels=hf_labels).loss
    torch.testing.assert_close(output.loss_sum / output.num_targets, theirs, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(("model_type", "num_heads", "variant"), DECODING_CASES)
def test_cached_greedy_decoding_matches_hf_recomputation(model_type, num_heads, variant):
    """Our KV cache (and, for seq2seq, cached cross-attention keys/values over a padded encoder
    input) against HF recomputing everything at each step."""
    hf_model = _random_hf_model(model_type, num_heads, variant)
    model = _ours_from_hf(hf_model)
    num_new = 6
    if model_type in ("t5", "bart"):
        batch, _ = _batch(model_type)
        encoder = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        prompt = torch.full((3, 1), hf_model.config.decoder_start_token_id)
    else:
        encoder, prompt = {}, torch.randint(0, VOCAB, (2, 5))
    hf_key = "decoder_input_ids" if encoder else "input_ids"
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + num_new)
    ours, theirs, step_input = prompt, prompt, prompt
    with torch.no_grad():
        for _ in range(num_new):
            if encoder:  # after the first step the encoder output lives in cache.cross
                our_logits = model(**encoder, decoder_input_ids=step_input, cache=cache).logits[
                    :, -1
                ]
            else:
                our_logits = model(step_input, cache=cache).logits[:, -1]
            hf_logits = hf_model(**encoder, **{hf_key: theirs}, use_cache=False).logits[:, -1]
            torch.testing.assert_close(our_logits, hf_logits, atol=ATOL, rtol=RTOL)
            step_input = our_logits.argmax(-1, keepdim=True)
            ours = torch.cat([ours, step_input], 1)
            theirs = torch.cat([theirs, hf_logits.argmax(-1, keepdim=True)], 1)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize(("model_type", "num_heads", "variant"),
                         [("gpt2", 4, ""), ("llama", 6, "gqa")])  # fmt: skip
def test_greedy_generation_matches_transformers_generate(model_type, num_heads, variant):
    """20 greedy tokens from lmforge.generation.search.generate and transformers' generate, with
    a left-padded batch (both count positions over real tokens only)."""
    from lmforge.generation.search import SamplingConfig, generate

    hf_model = _random_hf_model(model_type, num_heads, variant)
    model = _ours_from_hf(hf_model)
    input_ids = torch.randint(1, VOCAB, (2, 6))
    mask = torch.ones_like(input_ids)
    mask[1, :2] = 0
    input_ids = input_ids * mask
    ours = generate(model, input_ids, attention_mask=mask, sampling=SamplingConfig(
        max_new_tokens=20, temperature=0.0))  # fmt: skip
    with torch.no_grad():
        theirs = hf_model.generate(
            input_ids, attention_mask=mask, max_new_tokens=20, do_sample=False, pad_token_id=0,
            eos_token_id=None,
        )  # fmt: skip
    assert ours.shape == (2, 26)
    assert torch.equal(ours, theirs)


def _our_config(model_type: str, num_heads: int, variant: str) -> ModelConfig:
    return get_family(model_type).config_from_hf(_hf_config(model_type, num_heads, variant))


def _random_ours(cfg: ModelConfig):
    return _randomise(build_model(cfg))


@pytest.mark.parametrize(("model_type", "num_heads", "variant"), CASES)
def test_exported_model_matches_ours(model_type, num_heads, variant):
    model = _random_ours(_our_config(model_type, num_heads, variant))
    hf_model = build_hf_model(model.config, model.state_dict())
    batch, keep = _batch(model_type)
    with torch.no_grad():
        ours = model(**batch).logits
        theirs = hf_model(**batch).logits
    _assert_logits_match(ours, theirs, keep)


@pytest.mark.parametrize(("model_type", "num_heads", "variant"), CASES)
def test_round_trip_through_hf_is_bit_identical(model_type, num_heads, variant):
    model = _random_ours(_our_config(model_type, num_heads, variant))
    cfg, family = model.config, family_for_config(model.config)
    assert family.MODEL_TYPE == model_type
    hf_model = build_hf_model(cfg, model.state_dict())
    back_cfg = family.config_from_hf(hf_model.config)
    assert back_cfg == cfg
    # Weights the HF class has no place for (RoBERTa's pooler) travel beside it, as in a folder.
    exported = ours_to_hf_state_dict(family, model.state_dict(), cfg)
    extra = {k: exported[k] for k in extra_keys(family)}
    back = hf_state_dict_to_ours(family, {**hf_model.state_dict(), **extra}, back_cfg)
    original = model.state_dict()
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)


@pytest.mark.parametrize(("model_type", "num_heads", "variant"), CASES)
def test_model_folder_round_trip(tmp_path, model_type, num_heads, variant):
    """save_pretrained and back, and transformers' own from_pretrained reports nothing missing."""
    model = _random_ours(_our_config(model_type, num_heads, variant))
    save_hf_model_dir(model, tmp_path / "hf")
    cfg, state_dict = load_hf_model_dir(tmp_path / "hf")
    assert cfg == model.config
    assert all(torch.equal(state_dict[k], v) for k, v in model.state_dict().items())
    family = get_family(model_type)
    _, info = family.hf_model_class().from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "mismatched_keys"))
    assert info["unexpected_keys"] == UNEXPECTED.get(model_type, set())


def test_bare_body_folder_loads(tmp_path):
    """Checkpoints saved from GPT2Model (no "transformer." prefix, mask buffers)."""
    from safetensors.torch import save_file

    hf_model = _random_hf_model("gpt2", 4, "")
    hf_model.config.save_pretrained(tmp_path)
    body = {k.removeprefix("transformer."): v for k, v in hf_model.state_dict().items()}
    del body["lm_head.weight"]
    body["h.0.attn.bias"] = torch.ones(1, 1, 64, 64)
    save_file({k: v.clone() for k, v in body.items()}, tmp_path / "model.safetensors")
    cfg, state_dict = load_hf_model_dir(tmp_path)
    expected = _ours_from_hf(hf_model).state_dict()
    assert all(torch.equal(state_dict[k], v) for k, v in expected.items())


def test_bert_pretraining_checkpoint_ignores_pooler_and_nsp_head():
    """BertForPreTraining checkpoints (bert-base-uncased) carry a pooler and a next-sentence head,
    which our EncoderModel does not have: they are skipped, everything else is used."""
    hf_model = _random_hf_model("bert", 4, "")
    hf_sd = dict(hf_model.state_dict())
    hf_sd["bert.pooler.dense.weight"] = torch.zeros(48, 48)
    hf_sd["bert.pooler.dense.bias"] = torch.zeros(48)
    hf_sd["cls.seq_relationship.weight"] = torch.zeros(2, 48)
    hf_sd["cls.seq_relationship.bias"] = torch.zeros(2)
    cfg = get_family("bert").config_from_hf(hf_model.config)
    ours = hf_state_dict_to_ours(get_family("bert"), hf_sd, cfg)
    assert torch.equal(ours["lm_head.bias"], hf_sd["cls.predictions.bias"])


def test_bad_state_dict_reports_every_problem_at_once():
    hf_model = _random_hf_model("bloom", 4, "")
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


def test_split_projection_with_a_wrong_part_is_reported():
    hf_model = _random_hf_model("bert", 4, "")
    cfg = get_family("bert").config_from_hf(hf_model.config)
    hf_sd = dict(hf_model.state_dict())
    hf_sd["bert.encoder.layer.0.attention.self.key.weight"] = torch.zeros(40, 48)
    with pytest.raises(LmforgeError, match=r"mis-shaped \(1\).*attention\.self\.key\.weight"):
        hf_state_dict_to_ours(get_family("bert"), hf_sd, cfg)


def test_unsupported_model_type_is_a_clear_error():
    with pytest.raises(LmforgeError, match="supported: gpt2, bloom, llama"):
        get_family("mistral")


SEQ2SEQ_CASES = [c for c in CASES if c.values[0] in ("t5", "bart")]


@pytest.mark.parametrize(("model_type", "num_heads", "variant"), SEQ2SEQ_CASES)
def test_seq2seq_greedy_generation_matches_transformers_generate(model_type, num_heads, variant):
    """20 greedy tokens from lmforge's seq2seq decoding and transformers' generate, with a padded
    encoder input (no EOS stop: every step is compared)."""
    from lmforge.generation.search import SamplingConfig, generate_seq2seq

    config = _hf_config(model_type, num_heads, variant)
    if model_type == "t5":
        # transformers' T5 generate sizes its cache by num_layers: decoder depth must match.
        config.num_decoder_layers = config.num_layers
    hf_model = _randomise(get_family(model_type).hf_model_class()(config).float())
    model = _ours_from_hf(hf_model)
    batch, _ = _batch(model_type)
    start = hf_model.config.decoder_start_token_id
    ours = generate_seq2seq(
        model, batch["input_ids"], attention_mask=batch["attention_mask"],
        sampling=SamplingConfig(max_new_tokens=20, temperature=0.0), decoder_start_id=start,
    )  # fmt: skip
    with torch.no_grad():
        theirs = hf_model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], do_sample=False,
            num_beams=1, max_new_tokens=20, min_new_tokens=20, decoder_start_token_id=start,
            eos_token_id=None, forced_bos_token_id=None, forced_eos_token_id=None,
            no_repeat_ngram_size=0, pad_token_id=PAD.get(model_type, 0),
        )  # fmt: skip
    assert ours.shape == (3, 21)
    assert torch.equal(ours, theirs)
