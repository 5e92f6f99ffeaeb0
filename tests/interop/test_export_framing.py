"""Exports frame texts as lmforge does: the tokenizer that `convert --to-hf` writes adds each model
type's special tokens (ids and BERT's token types equal `lmforge.data.framing`'s), and transformers'
pipelines on the export give lmforge's results: fill-mask (BERT, RoBERTa), text-generation (GPT-2,
BLOOM, Llama) and, since transformers 5 removed the text2text-generation pipeline, what it did for
T5 and BART (AutoTokenizer, AutoModelForSeq2SeqLM.generate, decode)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from lmforge.cli.main import main  # noqa: E402
from lmforge.data.framing import framing_for  # noqa: E402
from lmforge.models.pretrained import load_pretrained  # noqa: E402

FAMILIES = ["bert", "roberta", "gpt2", "bloom", "llama", "t5", "bart"]
TEXT, SECOND = "the function returns a new list", "it raises an error"


RESHAPED = {
    "bloom": lambda cfg: {"d_ff": 4 * cfg.d_model},  # BLOOM's MLP is always 4 x d_model wide
    # transformers' T5 generate sizes its cache by num_layers: decoder depth must match.
    "t5": lambda cfg: {"num_decoder_layers": cfg.num_layers},
}
"""Model types whose tiny runs need other sizes to be exported and decoded by transformers."""


@pytest.fixture
def export(tiny_pretrained, tmp_path):  # noqa: ANN001, ANN201
    """`export("bert")` -> (the pretrained run, its `convert --to-hf` folder)."""

    def make(name: str) -> tuple[Path, Path]:
        run = tiny_pretrained(f"{name}-tiny")
        if name in RESHAPED:
            run = reshaped_run(run, tmp_path / name, RESHAPED[name])
        assert main(["convert", "--to-hf", str(run), str(tmp_path / "out")]) == 0
        return run, tmp_path / "out"

    return make


def reshaped_run(run: Path, out: Path, fields) -> Path:  # noqa: ANN001
    """A copy of `run` whose model has the sizes `fields(config)` gives, newly initialised."""
    from lmforge.config.loading import to_dict
    from lmforge.models.lm import build_model
    from lmforge.run_dir import read_model_config, resolve_checkpoint
    from lmforge.training.checkpoint import save_checkpoint

    shutil.copytree(run, out, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = read_model_config(resolve_checkpoint(run))
    cfg = dataclasses.replace(cfg, **fields(cfg))
    save_checkpoint(out, 0, build_model(cfg), None, {}, to_dict(cfg), keep_last=1)
    return out


def _framing(model, tokenizer):  # noqa: ANN001, ANN202
    cfg = model.config
    return framing_for(tokenizer, cfg.family, num_segment_types=cfg.embedding.num_segment_types)


@pytest.mark.parametrize("name", FAMILIES)
def test_exported_tokenizer_frames_as_lmforge(export, name):
    from transformers import AutoTokenizer

    run, out = export(name)
    model, tokenizer, _ = load_pretrained(run)
    framing = _framing(model, tokenizer)
    hf_tokenizer = AutoTokenizer.from_pretrained(str(out))
    first, second = tokenizer.encode(TEXT), tokenizer.encode(SECOND)
    assert hf_tokenizer(TEXT)["input_ids"] == framing.single(first)
    ids, segment_ids = framing.pair(first, second)
    pair = hf_tokenizer(TEXT, SECOND)
    assert pair["input_ids"] == ids
    assert pair.get("token_type_ids", [0] * len(ids)) == segment_ids
    assert ("token_type_ids" in pair) == (name == "bert")  # GPT-2 and BART would misread them
    assert framing.start or framing.end or name in ("gpt2", "bloom", "llama")


@pytest.mark.parametrize(("name", "masked"), [("bert", "[MASK]"), ("roberta", "<mask>")])
def test_fill_mask_pipeline_predicts_as_lmforge(export, name, masked):
    """The top prediction and its probability; RoBERTa's <mask> takes the space before it."""
    from transformers import pipeline

    from lmforge.tasks.fill_mask import fill_mask

    run, out = export(name)
    model, tokenizer, _ = load_pretrained(run)
    text = f"the function returns a {masked} list"
    ours = fill_mask(model.eval(), tokenizer, text, top_k=1)[0][0]
    best = pipeline("fill-mask", model=str(out), device="cpu")(text, top_k=1)[0]
    assert best["token_str"].strip() == ours.token
    assert best["score"] == pytest.approx(ours.score, abs=1e-5)


@pytest.mark.parametrize("name", ["gpt2", "bloom", "llama"])
def test_text_generation_pipeline_continues_as_lmforge(export, name):
    from transformers import pipeline

    from lmforge.generation.search import SamplingConfig, generate

    run, out = export(name)
    model, tokenizer, _ = load_pretrained(run)
    prompt = _framing(model, tokenizer).single(tokenizer.encode(TEXT))
    sampling = SamplingConfig(max_new_tokens=6, temperature=0.0)
    ours = generate(model, torch.tensor([prompt]), sampling=sampling, eos_id=tokenizer.eos_id)
    expected = tokenizer.decode(ours[0, len(prompt) :].tolist(), skip_special_tokens=True)
    generator = pipeline("text-generation", model=str(out), device="cpu")
    text = generator(TEXT, max_new_tokens=6, do_sample=False, return_full_text=False)
    assert text[0]["generated_text"] == expected


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_seq2seq_export_generates_as_lmforge(export, name):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from lmforge.generation.search import SamplingConfig, decoder_start_id, generate_seq2seq

    run, out = export(name)
    model, tokenizer, _ = load_pretrained(run)
    source = _framing(model, tokenizer).single(tokenizer.encode(TEXT))
    ours = generate_seq2seq(
        model, torch.tensor([source]), sampling=SamplingConfig(max_new_tokens=6, temperature=0.0),
        decoder_start_id=decoder_start_id(model.config), eos_id=tokenizer.eos_id,
    )  # fmt: skip
    hf_tokenizer = AutoTokenizer.from_pretrained(str(out))
    exported = AutoModelForSeq2SeqLM.from_pretrained(str(out)).eval()
    inputs = hf_tokenizer(TEXT, return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == source
    with torch.no_grad():
        theirs = exported.generate(**inputs, max_new_tokens=6, do_sample=False, num_beams=1)
    assert theirs[0].tolist() == ours[0].tolist()
