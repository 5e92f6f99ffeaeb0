"""Special token ids travel with the model through HF conversion: the HF config's pad/bos/eos and
decoder start ids become `ModelConfig.tokens` on import and come back out on export."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("transformers")

from lmforge.cli.main import main  # noqa: E402
from lmforge.config.model import TokenIdsConfig  # noqa: E402
from lmforge.interop.hf import get_family, load_hf_model_dir, save_hf_model_dir  # noqa: E402
from lmforge.interop.hf.convert import token_ids_from_hf  # noqa: E402
from lmforge.models.lm import build_model  # noqa: E402
from lmforge.run_dir import read_model_config, resolve_checkpoint  # noqa: E402
from tests.interop.test_convert_cmd import _word_tokenizer  # noqa: E402
from tests.interop.test_hf_parity import _hf_config, _random_hf_model  # noqa: E402


@pytest.mark.parametrize(("model_type", "variant"), [("t5", "untied"), ("bart", "")])
def test_converted_seq2seq_model_keeps_the_hf_decoder_start(tmp_path, model_type, variant):
    hf_model = _random_hf_model(model_type, 4, variant)
    hf_model.config.decoder_start_token_id = 5  # not any family default
    hf_model.save_pretrained(tmp_path / "hf")
    cfg, _ = load_hf_model_dir(tmp_path / "hf")
    hf = hf_model.config
    assert cfg.tokens == TokenIdsConfig(
        pad_id=hf.pad_token_id, bos_id=getattr(hf, "bos_token_id", None), eos_id=hf.eos_token_id,
        decoder_start_id=5,
    )  # fmt: skip


@pytest.mark.parametrize(("model_type", "variant"), [("t5", "untied"), ("bart", "")])
def test_exported_config_carries_the_decoder_start(tmp_path, model_type, variant):
    cfg = get_family(model_type).config_from_hf(_hf_config(model_type, 4, variant))
    tokens = TokenIdsConfig(pad_id=7, bos_id=None, eos_id=8, decoder_start_id=9)
    save_hf_model_dir(build_model(dataclasses.replace(cfg, tokens=tokens)), tmp_path / "hf")
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (saved["decoder_start_token_id"], saved["pad_token_id"], saved["eos_token_id"]) == (
        9, 7, 8,
    )  # fmt: skip


def test_ids_outside_the_vocabulary_are_dropped():
    """GPT-2's config names 50256 as bos/eos whatever the vocabulary size."""
    hf_config = _hf_config("gpt2", 4)
    hf_config.bos_token_id = hf_config.eos_token_id = 50256
    assert token_ids_from_hf(hf_config) == TokenIdsConfig()


def test_ids_the_hf_config_lacks_come_from_the_tokenizer(tmp_path):
    """A GPT-2 config without bos/eos ids, with a tokenizer whose <|endoftext|> (id 0) is both."""
    _random_hf_model("gpt2", 4, "").save_pretrained(tmp_path / "hf")
    _word_tokenizer().save_pretrained(str(tmp_path / "hf"))
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), str(tmp_path / "run")]) == 0
    tokens = read_model_config(resolve_checkpoint(tmp_path / "run")).tokens
    assert tokens == TokenIdsConfig(pad_id=0, bos_id=0, eos_id=0)
