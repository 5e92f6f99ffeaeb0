"""The Llama-style decoder: grouped-query attention in the block library, the llama-* presets, and a
run pretrained with `lmforge pretrain llama-tiny` exporting to a `LlamaForCausalLM` with its logits.

Logit, loss, decoding and round-trip parity with transformers on random tiny models are the llama
cases of test_hf_parity.py and test_convert_cmd.py; exported tokenizers and task heads are in
test_export_framing.py and test_export_finetuned.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from lmforge.cli.main import main
from lmforge.config.model import AttentionConfig
from lmforge.config.presets import get_preset
from lmforge.errors import LmforgeError
from lmforge.models.lm import build_model
from tests.conftest import TINY_MODEL


def _grouped(num_heads: int = 6, num_kv_heads: int = 2):
    cfg = get_preset("llama-tiny")
    return dataclasses.replace(
        cfg, vocab_size=96, d_model=48, num_heads=num_heads, num_layers=2, d_ff=64,
        attention=dataclasses.replace(cfg.attention, num_kv_heads=num_kv_heads),
    )  # fmt: skip


def test_query_heads_must_divide_into_key_value_groups():
    with pytest.raises(LmforgeError, match=r"num_heads \(6\) must be a multiple of .*\(4\)"):
        _grouped(num_heads=6, num_kv_heads=4)
    with pytest.raises(LmforgeError, match="num_kv_heads must be > 0"):
        AttentionConfig(num_kv_heads=0)


def test_grouped_query_attention_projects_and_caches_only_the_key_value_heads():
    model = build_model(_grouped()).eval()
    attention = model.decoder.blocks[0].self_attn
    assert attention.kv_proj.weight.shape == (2 * 2 * 8, 48)  # [k; v] x 2 heads x Dh 8
    assert model.new_cache(1, 10).keys.shape[2] == 2


def test_grouped_query_cached_decoding_equals_full_recomputation():
    model = build_model(_grouped()).eval()
    ids = torch.randint(0, 96, (2, 9))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache(2, 9)
        steps = [model(ids[:, :5], cache=cache).logits]
        steps += [model(ids[:, t : t + 1], cache=cache).logits for t in range(5, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)


def test_one_key_value_head_per_query_head_is_plain_multi_head_attention():
    """num_kv_heads == num_heads keeps the fused qkv projection: the same parameters (and
    state dict) as no grouping at all."""
    grouped = build_model(_grouped(num_heads=4, num_kv_heads=4), device="meta")
    plain = build_model(_grouped(num_heads=4, num_kv_heads=None), device="meta")
    assert grouped.state_dict().keys() == plain.state_dict().keys()


def test_llama_30m_matches_gpt2_30m_in_parameter_count():
    """The comparison the issue asks for: Llama's blocks at gpt2-30m's size, within 2%."""
    llama = build_model(get_preset("llama-30m"), device="meta").num_parameters()
    gpt2 = build_model(get_preset("gpt2-30m"), device="meta").num_parameters()
    assert abs(llama - gpt2) / gpt2 < 0.02


def test_pretrained_llama_tiny_exports_to_llama_for_causal_lm(python_docs_data, tmp_path: Path):
    """`lmforge pretrain llama-tiny` trains with clm by default, and `convert --to-hf` of the run
    is a LlamaForCausalLM giving the run's logits."""
    transformers = pytest.importorskip("transformers")
    from lmforge.models.pretrained import load_pretrained

    run = tmp_path / "run"
    argv = ["pretrain", "llama-tiny", f"--data.path={python_docs_data}", f"--run.dir={run}",
            *TINY_MODEL, "--train.max_steps=3", "--train.batch_size=2",
            "--eval.every=0"]  # fmt: skip
    assert main(argv) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["objective"]["kind"] == "clm"
    assert main(["convert", "--to-hf", str(run), str(tmp_path / "hf")]) == 0
    exported = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert type(exported).__name__ == "LlamaForCausalLM"
    model, tokenizer, _ = load_pretrained(run)
    ids = torch.tensor([tokenizer.encode("the function returns a new list")])
    with torch.no_grad():
        ours = model.eval()(ids).logits
        theirs = exported(input_ids=ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)


def test_flop_count_has_the_weights_of_grouped_query_attention():
    """Training FLOPs count each matmul weight once per token: with grouped keys and values the
    attention has fewer of them (embeddings and norms excepted, only the head's matrix counts)."""
    from lmforge.training.flops import matmul_parameters

    cfg = get_preset("smollm-135m")
    model = build_model(cfg, device="meta")
    norms = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 1)
    assert matmul_parameters(cfg) == model.num_parameters() - norms


def test_grouped_query_attention_exports_only_as_llama():
    """The other architectures have one key/value head per query head: such a model is refused
    with the field named, not mapped onto keys that do not fit."""
    pytest.importorskip("transformers")
    from lmforge.interop.hf import family_for_config

    cfg = get_preset("gpt2-tiny")
    grouped = dataclasses.replace(cfg, attention=dataclasses.replace(cfg.attention, num_kv_heads=2))
    with pytest.raises(LmforgeError, match=r"gpt2: model\.attention\.num_kv_heads=2"):
        family_for_config(grouped)
