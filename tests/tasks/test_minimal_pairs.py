"""Minimal-pair evaluation: sentence scores of every family against a hand computation (one full
forward per sentence, or per masked token for pseudo-log-likelihood), the accuracies, reading BLiMP
files, and `lmforge evaluate minimal-pairs` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.cli.main import main
from lmforge.errors import LmforgeError
from lmforge.models.pretrained import load_pretrained
from lmforge.tasks.minimal_pairs import (
    MinimalPair,
    MinimalPairsOptions,
    accuracies,
    evaluate_minimal_pairs,
    read_minimal_pairs,
)
from lmforge.tasks.scoring import sentence_log_likelihoods
from tests.conftest import shared_file

SENTENCES = [
    "Who should Derek hug after shocking Richard?",
    "The cats sleeps.",
    "a",
    "Many people were fixing Impressionism, and so was the museum.",
]


def _log_probs(logits: torch.Tensor, tokenizer) -> torch.Tensor:  # noqa: ANN001
    """(T, V) logits -> log-probabilities over the tokenizer's ids (the model pads its vocab)."""
    return logits[:, : tokenizer.vocab_size].log_softmax(dim=-1)


def _hand_decoder(model, tokenizer, ids: list[int]) -> float:  # noqa: ANN001
    """log p(w_1 ... w_n | separator), read off one forward over the whole sequence."""
    full = [tokenizer.separator_id, *ids]  # the separator ends every pretraining document
    log_probs = _log_probs(model(torch.tensor([full])).logits[0], tokenizer)
    return sum(log_probs[k, full[k + 1]].item() for k in range(len(ids)))


def _hand_encoder(model, tokenizer, ids: list[int]) -> float:  # noqa: ANN001
    """Pseudo-log-likelihood: one forward per token, that token masked."""
    if tokenizer.cls_id is not None:
        framed = [tokenizer.cls_id, *ids, tokenizer.sep_id]
    else:
        framed = [tokenizer.bos_id, *ids, tokenizer.eos_id]
    total = 0.0
    for t in range(1, len(framed) - 1):
        masked = list(framed)
        masked[t] = tokenizer.mask_id
        log_probs = _log_probs(model(torch.tensor([masked])).logits[0], tokenizer)
        total += log_probs[t, framed[t]].item()
    return total


def _hand_seq2seq(model, tokenizer, ids: list[int]) -> float:  # noqa: ANN001
    """The sentence's tokens as the decoder's target, given a source that hides the whole text."""
    if tokenizer.sentinel_ids:  # T5: one sentinel span, decoding starts from <pad>
        sentinel = tokenizer.sentinel_ids[0]
        source, prefix = [sentinel, tokenizer.eos_id], [tokenizer.pad_id, sentinel]
    else:  # BART: one mask, decoding starts from </s>
        source = [tokenizer.bos_id, tokenizer.mask_id, tokenizer.eos_id]
        prefix = [tokenizer.eos_id, tokenizer.bos_id]
    decoder = torch.tensor([prefix + ids])
    logits = model(torch.tensor([source]), decoder_input_ids=decoder).logits[0]
    log_probs = _log_probs(logits, tokenizer)
    return sum(log_probs[len(prefix) - 1 + k, token].item() for k, token in enumerate(ids))


_HAND = {"decoder": _hand_decoder, "encoder": _hand_encoder, "encoder_decoder": _hand_seq2seq}


def _expected(model, tokenizer) -> list[float]:  # noqa: ANN001
    hand = _HAND[model.config.family]
    return [hand(model, tokenizer, tokenizer.encode(text)) for text in SENTENCES]


@pytest.mark.parametrize(
    "preset", ["gpt2-tiny", "bloom-tiny", "bert-tiny", "roberta-tiny", "t5-tiny", "bart-tiny"]
)
def test_scores_equal_a_hand_computation(tiny_pretrained, preset: str) -> None:
    """batch_size 3: sentences of different lengths share a padded batch, and an encoder's masked
    copies of one sentence are split across forwards."""
    model, tokenizer, _ = load_pretrained(tiny_pretrained(preset))
    scores = sentence_log_likelihoods(model, tokenizer, SENTENCES, batch_size=3)
    assert scores == pytest.approx(_expected(model, tokenizer), rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("preset", ["bert-tiny", "roberta-tiny"])
def test_pseudo_log_likelihood_equals_masking_one_token_at_a_time(
    tiny_pretrained, preset: str
) -> None:
    """Every masked copy of every sentence in one padded forward, against one forward per
    masked token."""
    model, tokenizer, _ = load_pretrained(tiny_pretrained(preset))
    scores = sentence_log_likelihoods(model, tokenizer, SENTENCES, batch_size=1000)
    assert scores == pytest.approx(_expected(model, tokenizer), rel=1e-5, abs=1e-4)


def test_a_model_that_cannot_score_is_one_clear_error(tiny_pretrained) -> None:
    bert, wordpiece, _ = load_pretrained(tiny_pretrained("bert-tiny"))
    t5, unigram, _ = load_pretrained(tiny_pretrained("t5-tiny"))
    with pytest.raises(LmforgeError, match="pseudo-log-likelihood needs a mask token"):
        sentence_log_likelihoods(bert, unigram, ["a"])
    with pytest.raises(LmforgeError, match="<extra_id_0> or BART's <mask>"):
        sentence_log_likelihoods(t5, wordpiece, ["a"])
    with pytest.raises(LmforgeError, match="the model reads at most 256"):
        sentence_log_likelihoods(bert, wordpiece, ["word " * 300])


def test_accuracy_is_the_mean_over_paradigms_and_over_pairs() -> None:
    """A pair is right only when the good sentence scores strictly higher."""
    pairs = [MinimalPair("g", "b", "p1", "syntax")] * 3 + [
        MinimalPair("g", "b", "p2", "morphology")
    ]
    scores = [(-1.0, -2.0), (-2.0, -1.0), (-1.0, -1.0), (-1.0, -3.0)]
    metrics = accuracies(pairs, [good > bad for good, bad in scores])
    assert metrics["paradigms"]["p1"]["accuracy"] == pytest.approx(100 / 3)
    assert metrics["accuracy"] == pytest.approx((100 / 3 + 100) / 2)
    assert metrics["accuracy_over_pairs"] == pytest.approx(50.0)
    assert metrics["fields"]["syntax"] == {
        "accuracy": pytest.approx(100 / 3), "num_paradigms": 1, "num_pairs": 3,
    }  # fmt: skip
    assert set(metrics["phenomena"]) == {"unspecified"}


def _write_lines(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_max_pairs_counts_per_paradigm_and_names_default_to_the_file(tmp_path) -> None:
    good_bad = {"sentence_good": "A dog barks.", "sentence_bad": "A dog bark."}
    _write_lines(tmp_path / "b.jsonl", [{**good_bad, "UID": uid} for uid in "xyxyx"])
    _write_lines(tmp_path / "a.jsonl", [good_bad] * 3)
    (tmp_path / "notes.txt").write_text("not a paradigm")
    pairs = read_minimal_pairs(tmp_path, max_pairs=2)
    assert [pair.paradigm for pair in pairs] == ["a", "a", "x", "y", "x", "y"]
    assert pairs[0].field == "unspecified"


@pytest.mark.parametrize(
    ("make", "message"),
    [(lambda d: d / "missing.jsonl", "missing.jsonl does not exist"),
     (lambda d: d, "holds no .jsonl file"),
     (lambda d: _write_lines(d / "p.jsonl", [{"sentence_good": "a", "sentence_bad": "b"},
                                             {"sentence_good": "a"}]),
      "p.jsonl:2: a minimal pair needs the non-empty texts sentence_good and sentence_bad"),
     (lambda d: _write_lines(d / "p.jsonl", [[1, 2]]), "p.jsonl:1: a minimal pair needs"),
     (lambda d: (d / "p.jsonl").write_text("{oops\n") and d / "p.jsonl", "p.jsonl:1: not valid")],
)  # fmt: skip
def test_bad_input_is_one_clear_line(tiny_pretrained, tmp_path, capsys, make, message) -> None:
    data = make(tmp_path)
    code = main(["evaluate", "minimal-pairs", str(tiny_pretrained("gpt2-tiny")), "--data",
                 str(data)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


_BLIMP = ["adjunct_island", "complex_NP_island", "anaphor_gender_agreement"]


def test_evaluate_minimal_pairs_end_to_end(tiny_pretrained, tmp_path, capsys) -> None:
    data = tmp_path / "blimp"
    data.mkdir()
    for name in _BLIMP:
        lines = shared_file(f"blimp/{name}.jsonl").read_text().splitlines()[:12]
        (data / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = main(["evaluate", "minimal-pairs", str(tiny_pretrained("bert-tiny")), "--data",
                 str(data), "--max-pairs", "8", "--output", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean over 3 paradigms" in printed and all(name in printed for name in _BLIMP)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_pairs"] == 24 and metrics["family"] == "encoder"
    assert set(metrics["paradigms"]) == set(_BLIMP)
    assert metrics["fields"]["syntax"]["num_paradigms"] == 2
    assert metrics["phenomena"]["island_effects"]["num_pairs"] == 16
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert all(row["correct"] == (row["score_good"] > row["score_bad"]) for row in rows)
    island = [row["correct"] for row in rows if row["paradigm"] == "adjunct_island"]
    assert metrics["paradigms"]["adjunct_island"]["accuracy"] == pytest.approx(
        100 * sum(island) / 8
    )
    for field in ("syntax", "morphology"):
        assert (out / f"field-{field}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_random_init_scores_a_fresh_model(tiny_pretrained, tmp_path) -> None:
    data = _write_lines(
        tmp_path / "p.jsonl", [{"sentence_good": "A dog barks.", "sentence_bad": "A dog bark."}]
    )
    scores = {}
    for init in ("pretrained", "random"):
        options = MinimalPairsOptions(data=str(data), init=init, seed=3)
        result = evaluate_minimal_pairs(tiny_pretrained("t5-tiny"), options, progress=False)
        assert result.metrics["init"] == init and result.files == ()
        scores[init] = result.rows[0]["score_good"]
    assert scores["pretrained"] != scores["random"]
