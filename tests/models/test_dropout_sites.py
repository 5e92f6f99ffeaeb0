"""Dropout sites equal transformers' for every model type and task head: with every rate of the
model at p > 0, one training-mode forward pass of ours and of the reference class (same config)
drop out the same kinds of tensors in the same order. Exact RNG equality with transformers is not
achievable (different kernels draw differently), so the sites are compared, not the values.

Each call of F.dropout with p > 0 is recorded by the width of its tensor: "hidden" (d_model),
"ffn" (d_ff: inside the feed-forward) or "scores" (attention probabilities), as is SDPA with
dropout_p > 0 ("scores")."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lmforge.config.model import with_dropout
from lmforge.config.presets import get_preset
from lmforge.models.lm import build_model

D, D_FF, T, P = 32, 128, 7, 0.1
PRESETS = ["bert-tiny", "roberta-tiny", "gpt2-tiny", "bloom-tiny", "t5-tiny", "bart-tiny"]


def tiny_config(preset: str):
    cfg = dataclasses.replace(
        get_preset(preset), vocab_size=64, d_model=D, num_heads=4, num_layers=2, d_ff=D_FF
    )
    if cfg.family == "encoder_decoder":
        cfg = dataclasses.replace(cfg, num_decoder_layers=2)
    return with_dropout(cfg, P)


def record_sites(monkeypatch: pytest.MonkeyPatch, run) -> list[str]:  # noqa: ANN001
    """The dropout sites `run()` passes through, in order."""
    sites: list[str] = []
    dropout, sdpa = F.dropout, F.scaled_dot_product_attention

    def recording_dropout(x, p=0.5, training=True, inplace=False):  # noqa: ANN001, ANN202
        if p > 0 and training:
            sites.append({D: "hidden", D_FF: "ffn"}.get(x.shape[-1], "scores"))
        return dropout(x, p, training, inplace)

    def recording_sdpa(*args, dropout_p=0.0, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if dropout_p > 0:
            sites.append("scores")
        return sdpa(*args, dropout_p=dropout_p, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(F, "dropout", recording_dropout)
        patch.setattr(F, "scaled_dot_product_attention", recording_sdpa)
        run()
    return sites


def inputs(cfg) -> dict[str, torch.Tensor]:  # noqa: ANN001
    ids = torch.randint(2, cfg.vocab_size, (2, T))
    if cfg.family == "encoder_decoder":
        return {"input_ids": ids, "decoder_input_ids": ids[:, :5]}
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("preset", PRESETS)
def test_backbone_drops_out_where_transformers_does(
    preset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("transformers")
    from lmforge.interop.hf import build_hf_model

    cfg = tiny_config(preset)
    ours = build_model(cfg).train()
    theirs = build_hf_model(cfg, ours.state_dict()).train()
    batch = inputs(cfg)
    our_sites = record_sites(monkeypatch, lambda: ours(**batch))
    their_sites = record_sites(monkeypatch, lambda: theirs(**batch))
    assert our_sites == their_sites
    assert "ffn" in our_sites if preset == "t5-tiny" else "ffn" not in our_sites


TASKS = [
    ("bert-tiny", "sequence"), ("roberta-tiny", "sequence"), ("gpt2-tiny", "sequence"),
    ("bloom-tiny", "sequence"), ("bert-tiny", "token"), ("roberta-tiny", "token"),
    ("gpt2-tiny", "token"), ("bloom-tiny", "token"), ("bert-tiny", "span"),
    ("roberta-tiny", "span"),
]  # fmt: skip
AUTO = {"sequence": "AutoModelForSequenceClassification",
        "token": "AutoModelForTokenClassification",
        "span": "AutoModelForQuestionAnswering"}  # fmt: skip


def task_model(cfg, kind: str):  # noqa: ANN001, ANN201
    from lmforge.tasks.classification import SequenceClassifier
    from lmforge.tasks.ner import TaggingModel
    from lmforge.tasks.qa import SpanExtractor

    backbone = build_model(cfg)
    if kind == "sequence":
        return SequenceClassifier(backbone, 3, P)
    return TaggingModel(backbone, 3, P) if kind == "token" else SpanExtractor(backbone)


@pytest.mark.parametrize(("preset", "kind"), TASKS)
def test_task_heads_have_the_reference_structure_and_dropout_sites(
    preset: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    transformers = pytest.importorskip("transformers")
    from lmforge.interop.hf import family_for_config

    cfg = tiny_config(preset)
    hf_config = family_for_config(cfg).config_to_hf(cfg)
    hf_config.num_labels = 2 if kind == "span" else 3
    hf_config.pad_token_id = 0  # GPT-2 and BLOOM find the last token by it; the batch has none
    theirs = getattr(transformers, AUTO[kind]).from_config(hf_config).train()
    ours = task_model(cfg, kind).train()
    batch = inputs(cfg)
    segments = torch.zeros_like(batch["input_ids"])
    args = (batch["input_ids"], batch["attention_mask"])
    run_ours = (lambda: ours(*args, segments)) if kind != "token" else (lambda: ours(*args))
    assert record_sites(monkeypatch, run_ours) == record_sites(monkeypatch, lambda: theirs(**batch))
    head = {"sequence": ("classifier", "score"), "token": ("classifier",), "span": ("qa_outputs",)}
    linear = next(getattr(theirs, name) for name in head[kind] if hasattr(theirs, name))
    linear = getattr(linear, "out_proj", linear)  # RobertaClassificationHead
    assert (ours.head.proj.bias is None) == (linear.bias is None)
    assert ours.head.proj.weight.shape == linear.weight.shape
