"""Zero- and few-shot classification by verbalizer likelihood: the scores against a hand
computation, padding, demonstrations, bad input, and `lmforge evaluate zero-shot` on SST-2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lmforge.cli.main import main
from lmforge.data.labelled import ClassificationExample
from lmforge.errors import LmforgeError
from lmforge.models.pretrained import load_pretrained
from lmforge.tasks.zero_shot import (
    Verbalizer,
    baselines,
    build_context,
    calibrate,
    check_labels,
    choose_demonstrations,
    content_free_examples,
    continuation_log_probs,
    parse_label_words,
    predict_label,
    score_labels,
)
from tests.conftest import shared_file

SENTIMENT = Verbalizer("Review: {text}\nSentiment:", ("text",), {"0": "negative", "1": "positive"})


def _example(text: str, label: str | None = None) -> ClassificationExample:
    return ClassificationExample((text,), label)


@pytest.fixture
def gpt2(tiny_pretrained):  # noqa: ANN201
    model, tokenizer, _ = load_pretrained(tiny_pretrained("gpt2-tiny"))
    return model, tokenizer


def _hand_score(model, tokenizer, context: str, continuation: str) -> float:  # noqa: ANN001
    """Sum over the continuation's tokens of log p(token | everything before), read off the
    logits of the whole sequence."""
    context_ids = [tokenizer.separator_id, *tokenizer.encode(context)]
    continuation_ids = tokenizer.encode(continuation)
    ids = torch.tensor([context_ids + continuation_ids])
    log_probs = model(ids).logits[0].log_softmax(dim=-1)  # (T, V)
    first = len(context_ids)
    return sum(log_probs[first + k - 1, token].item() for k, token in enumerate(continuation_ids))


def test_scores_are_summed_log_probs_of_the_label_word(gpt2) -> None:
    model, tokenizer = gpt2
    contexts = ["Review: a gorgeous , witty film .\nSentiment:", "Review: dull\nSentiment:"]
    scores = score_labels(model, tokenizer, SENTIMENT, contexts)
    for context, row in zip(contexts, scores, strict=True):
        for label, word in SENTIMENT.label_words.items():
            expected = _hand_score(model, tokenizer, context, " " + word)
            assert row[label] == pytest.approx(expected, abs=1e-4)
    mean = score_labels(model, tokenizer, SENTIMENT, contexts, normalize="length")
    length = len(tokenizer.encode(" positive"))
    assert length > 1  # the tiny vocabulary splits it, so the mean differs from the sum
    assert mean[0]["1"] == pytest.approx(scores[0]["1"] / length, abs=1e-5)


def test_padding_in_a_batch_does_not_change_scores(gpt2) -> None:
    model, tokenizer = gpt2
    contexts = ["a", "a much longer review that needs a lot of padding around it", "mid length"]
    together = score_labels(model, tokenizer, SENTIMENT, contexts, batch_size=3)
    alone = [score_labels(model, tokenizer, SENTIMENT, [c], batch_size=1)[0] for c in contexts]
    for joint, single in zip(together, alone, strict=True):
        assert joint == pytest.approx(single, abs=1e-5)


def test_long_contexts_lose_their_start(gpt2) -> None:
    model, tokenizer = gpt2
    context = "the film is long " * 199 + "the end"  # far more than the model's 256 positions
    (scores,) = score_labels(model, tokenizer, SENTIMENT, [context])
    continuation = tokenizer.encode(" positive")
    kept = tokenizer.encode(context)[-(256 - 1 - len(continuation)) :]
    (expected,) = continuation_log_probs(
        model, [([tokenizer.separator_id, *kept], continuation)], vocab_size=10**6, batch_size=1
    )
    assert scores["1"] == pytest.approx(expected.sum().item(), abs=1e-4)


def test_demonstrations_are_balanced_and_seeded() -> None:
    train = [_example(f"neg {i}", "0") for i in range(10)] + [
        _example(f"pos {i}", "1") for i in range(3)
    ]
    train.append(_example("other", "7"))  # a label without a word is never a demonstration
    four = choose_demonstrations(train, 4, ["0", "1"], seed=1)
    assert sorted(e.label for e in four) == ["0", "0", "1", "1"]
    assert four == choose_demonstrations(train, 4, ["0", "1"], seed=1)
    assert any(choose_demonstrations(train, 4, ["0", "1"], seed=s) != four for s in range(2, 6))
    # Only three positives: the rest comes from the other class.
    eight = choose_demonstrations(train, 8, ["0", "1"], seed=0)
    assert sorted(e.label for e in eight) == ["0"] * 5 + ["1"] * 3
    with pytest.raises(LmforgeError, match="--shots 20 needs"):
        choose_demonstrations(train, 20, ["0", "1"], seed=0)


def test_few_shot_context_joins_demonstrations_with_blank_lines() -> None:
    demos = [_example("great", "1"), _example("awful", "0")]
    context = build_context(SENTIMENT, demos, _example("fine"))
    assert context == (
        "Review: great\nSentiment: positive\n\n"
        "Review: awful\nSentiment: negative\n\n"
        "Review: fine\nSentiment:"
    )


def test_label_words_and_unknown_labels() -> None:
    assert parse_label_words("0=negative, 1 = positive", []) == {"0": "negative", "1": "positive"}
    assert parse_label_words("", ["DESC", "HUM"]) == {"DESC": "DESC", "HUM": "HUM"}
    with pytest.raises(LmforgeError, match="LABEL=WORD pairs"):
        parse_label_words("0:negative", [])
    with pytest.raises(LmforgeError, match="same word"):
        parse_label_words("0=bad,1=bad", [])
    with pytest.raises(LmforgeError, match=r"label '2' \(example 2\) has no word"):
        check_labels([_example("a", "0"), _example("b", "2")], SENTIMENT.label_words, "dev.txt")
    with pytest.raises(LmforgeError, match=r"names \{review\}"):
        Verbalizer("{review}", ("text",), {"0": "no"}).prompt(_example("x"))


def test_baselines_of_an_unbalanced_set() -> None:
    scores = baselines(["0", "0", "0", "1"], ["0", "1"])
    assert scores["majority_accuracy"] == 75.0
    assert scores["majority_macro_f1"] == pytest.approx(100 * (6 / 7 + 0) / 2)
    assert scores["random_accuracy"] == 50.0
    # F1 of class c from expected counts: 2 n_c / (N + L n_c).
    assert scores["random_macro_f1"] == pytest.approx(100 * (6 / 10 + 2 / 6) / 2)


def test_calibration_divides_out_the_content_free_label_probabilities() -> None:
    """Zhao et al. (2021): q = p / p_cf (renormalised over the labels), by hand for two labels."""
    scores = [{"0": math.log(0.6), "1": math.log(0.2)}, {"0": math.log(0.1), "1": math.log(0.1)}]
    content_free = [{"0": math.log(0.8), "1": math.log(0.2)}, {"0": math.log(0.6), "1": 0.0}]
    # renormalised content-free: (0.8, 0.2) and (0.6 / 1.6, 1 / 1.6); their mean is p_cf.
    p_cf = [(0.8 + 0.375) / 2, (0.2 + 0.625) / 2]
    calibrated = calibrate(scores, content_free)
    expected_first = [math.log(0.75 / p_cf[0]), math.log(0.25 / p_cf[1])]
    assert list(calibrated[0].values()) == pytest.approx(expected_first)
    # An input the prompt alone explains (equal label probabilities) now goes to the label the
    # prompt disfavours; uncalibrated, the first label would win the tie.
    assert predict_label(calibrated[1]) == "1" and predict_label(scores[1]) == "0"
    assert [e.texts for e in content_free_examples(2)] == [("N/A",) * 2, ("",) * 2, ("[MASK]",) * 2]


def _sst(tmp_path: Path, name: str, source: str, count: int) -> Path:
    lines = shared_file(f"sst/{source}").read_text().splitlines()[:count]
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    return tmp_path / name


def test_evaluate_zero_shot_end_to_end(tiny_pretrained, tmp_path, capsys) -> None:
    dev = _sst(tmp_path, "dev.txt", "stsa.binary.dev", 40)
    train = _sst(tmp_path, "train.txt", "stsa.binary.train", 20)
    out = tmp_path / "out"
    code = main(["evaluate", "zero-shot", str(tiny_pretrained("gpt2-tiny")), "--data", str(dev),
                 "--train", str(train), "--shots", "2", "--label-words", "0=negative,1=positive",
                 "--template", r"Review: {text}\nSentiment:", "--output", str(out),
                 "--calibrate"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "majority class" in printed and "uniform random" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 100 and 0 <= metrics["macro_f1"] <= 100
    assert metrics["random_accuracy"] == 50.0 and metrics["num_examples"] == 40
    assert metrics["calibrate"] is True
    assert len(metrics["demonstrations"]) == 2
    assert metrics["demonstrations"][0].startswith("Review: ")
    assert "\nSentiment: " in metrics["demonstrations"][0]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and set(rows[0]) == {"text", "label", "prediction", "scores"}
    assert all(row["prediction"] == max(row["scores"], key=row["scores"].get) for row in rows)
    accuracy = 100 * sum(row["prediction"] == row["label"] for row in rows) / 40
    assert metrics["accuracy"] == pytest.approx(accuracy)


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--label-words", "0=negative"], "label '1' (example 1) has no word in --label-words"),
     (["--shots", "2"], "--shots 2 needs --train FILE")],
)  # fmt: skip
def test_bad_zero_shot_input_is_one_clear_line(
    tiny_pretrained, tmp_path, capsys, extra, message
) -> None:
    dev = tmp_path / "dev.txt"
    dev.write_text("1 a gorgeous , witty film .\n0 an utter mess .\n")
    code = main(["evaluate", "zero-shot", str(tiny_pretrained("gpt2-tiny")), "--data", str(dev),
                 *extra])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_encoder_model_is_refused(tiny_pretrained, tmp_path, capsys) -> None:
    dev = tmp_path / "dev.txt"
    dev.write_text("1 a gorgeous , witty film .\n0 an utter mess .\n")
    code = main(["evaluate", "zero-shot", str(tiny_pretrained("bert-tiny")), "--data", str(dev)])
    assert code == 2
    assert "zero-shot scoring needs a decoder" in capsys.readouterr().err


def test_random_init_scores_a_fresh_model(tiny_pretrained, tmp_path) -> None:
    """--init random: the same architecture freshly initialised, so its scores differ from the
    checkpoint's while the prompts stay the same."""
    dev = _sst(tmp_path, "dev.txt", "stsa.binary.dev", 8)
    scores = {}
    for init in ("pretrained", "random"):
        out = tmp_path / init
        args = ["--data", str(dev), "--init", init, "--seed", "3", "--output", str(out)]
        assert main(["evaluate", "zero-shot", str(tiny_pretrained("gpt2-tiny")), *args]) == 0
        assert json.loads((out / "metrics.json").read_text())["init"] == init
        rows = (out / "predictions.jsonl").read_text().splitlines()
        scores[init] = [json.loads(row)["scores"] for row in rows]
    assert scores["pretrained"] != scores["random"]
