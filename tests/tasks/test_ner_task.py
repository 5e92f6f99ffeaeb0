"""The tagging task: sub-word label alignment, label checks, reading inputs, and a tiny model that
overfits a few CoNLL sentences through task.loss / task.evaluate."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from lmforge.cli.main import main
from lmforge.config.finetune import TagOptions
from lmforge.errors import LmforgeError
from lmforge.models.heads import IGNORE_INDEX
from lmforge.models.pretrained import load_pretrained
from lmforge.tasks.base import task_class
from lmforge.tasks.ner import TaggingExample, TaggingTask
from tests.conftest import shared_file

SENTENCES = [
    ("EU rejects German call to boycott British lamb .", "I-ORG O I-MISC O O O I-MISC O O"),
    ("Peter Blackburn", "I-PER I-PER"),
    ("BRUSSELS 1996-08-22", "I-LOC O"),
    ("Germany 's representative to the European Union 's veterinary committee Werner Zwingmann "
     "said on Wednesday", "I-LOC O O O O I-ORG I-ORG O O O I-PER I-PER O O O"),
    ("Rare Hendrix song draft sells for almost $ 17,000 .", "O I-PER O O O O O O O O"),
    ("LONDON 1996-08-22", "I-LOC O"),
    ("Spanish Farm Minister Loyola de Palacio had earlier accused Fischler",
     "I-MISC O O I-PER I-PER I-PER O O O I-PER"),
    ("China says Taiwan spoils atmosphere for talks .", "I-LOC O I-LOC O O O O O"),
]  # fmt: skip
"""The first sentences of CoNLL-2003's eng.train (IOB1), some shortened."""


FAST = ["--log.progress=false", "--log.tensorboard=false", "--train.batch_size=8"]


def _examples(scheme: str = "iob1") -> list[TaggingExample]:
    return [TaggingExample(text.split(), tags.split(), scheme) for text, tags in SENTENCES]


def _task(tiny_pretrained, preset: str, **options) -> tuple[TaggingTask, torch.nn.Module]:
    backbone, tokenizer, _ = load_pretrained(tiny_pretrained(preset))
    task = task_class("tag")(TagOptions(**options), tokenizer, backbone.config)
    task.fit_labels(_examples())
    return task, task.build_model(backbone)


def test_labels_are_bio2_sorted_with_o_first(tiny_pretrained) -> None:
    task, _ = _task(tiny_pretrained, "bert-tiny")
    types = ["LOC", "MISC", "ORG", "PER"]
    assert task.labels == ["O"] + [f"B-{t}" for t in types] + [f"I-{t}" for t in types]
    assert task.state() == {"labels": task.labels, "scheme": "iob1"}


@pytest.mark.parametrize("preset", ["bert-tiny", "roberta-tiny", "gpt2-tiny"])
def test_first_piece_of_each_word_carries_its_label(tiny_pretrained, preset: str) -> None:
    task, _ = _task(tiny_pretrained, preset)
    examples = _examples()
    for example, feature in zip(examples, task.features(examples), strict=True):
        ids, labels = feature["input_ids"], feature["labels"]
        labelled = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        assert len(labelled) == len(example.words)  # no truncation at max_length 128
        bio2 = [task.labels[labels[i]] for i in labelled]
        assert bio2 == _bio2(example.tags)
        # The pieces from one first piece to the next decode to exactly the word, as the word
        # alone decodes (WordPiece lower-cases, knows no "$" and decodes "1996-08-22" as
        # "1996 - 08 - 22": spaces are dropped before comparing).
        ends = [*labelled[1:], len(ids) - len(task.framing.end)]
        spans = [ids[a:b] for a, b in zip(labelled, ends, strict=True)]
        decoded = [_squeeze(task.tokenizer.decode(span)) for span in spans]
        alone = [_squeeze(task.tokenizer.decode(task.tokenizer.encode(w))) for w in example.words]
        assert decoded == alone
        if preset != "bert-tiny":  # byte-level BPE: every word comes back as it was
            assert decoded == example.words


def _squeeze(text: str) -> str:
    return "".join(text.split())


def _bio2(iob1: list[str]) -> list[str]:
    return [
        f"B-{t[2:]}" if t.startswith("I-") and (i == 0 or iob1[i - 1][2:] != t[2:]) else t
        for i, t in enumerate(iob1)
    ]


@pytest.mark.parametrize(
    ("preset", "first", "last"),
    [("bert-tiny", "[CLS]", "[SEP]"), ("roberta-tiny", "<s>", "</s>"), ("gpt2-tiny", None, None)],
)
def test_special_tokens_follow_the_family(tiny_pretrained, preset, first, last) -> None:
    task, _ = _task(tiny_pretrained, preset)
    ids = task.features(_examples()[:1])[0]["input_ids"]
    words = SENTENCES[0][0].split()
    if first is None:  # decoders: the sentence alone
        assert task.tokenizer.decode(ids).strip() == " ".join(words)
    else:
        assert task.tokenizer.decode(ids[:1]) == first
        assert task.tokenizer.decode(ids[-1:]) == last


def test_words_beyond_max_length_are_predicted_o(tiny_pretrained) -> None:
    task, model = _task(tiny_pretrained, "bert-tiny", max_length=8)
    examples = _examples()[:1]  # 9 words, 11+ pieces
    feature = task.features(examples)[0]
    assert len(feature["input_ids"]) == 8
    metrics, rows = task.evaluate(model, examples, batch_size=4)
    assert rows[0]["words"] == examples[0].words
    assert len(rows[0]["predicted"]) == len(examples[0].words)
    assert rows[0]["predicted"][-1] == "O"
    assert 0 <= metrics["f1"] <= 100


def test_validation_tag_unseen_in_training_is_refused(tiny_pretrained) -> None:
    task, _ = _task(tiny_pretrained, "bert-tiny")
    unseen = [TaggingExample(["Olympics"], ["B-EVENT"], "bio2")]
    with pytest.raises(LmforgeError, match="tag B-EVENT in dev.conll never occurs"):
        task.check_labels(unseen, "dev.conll")
    task.check_labels(_examples(), "dev.conll")


def test_state_round_trips_through_json(tiny_pretrained) -> None:
    task, _ = _task(tiny_pretrained, "bert-tiny")
    backbone, tokenizer, _ = load_pretrained(tiny_pretrained("bert-tiny"))
    fresh = TaggingTask(TagOptions(), tokenizer, backbone.config)
    fresh.load_state(json.loads(json.dumps(task.state())))
    assert fresh.labels == task.labels and fresh.train_scheme == "iob1"


def test_read_inputs_takes_conll_with_or_without_tags_and_plain_text(tmp_path, tiny_pretrained):
    task, model = _task(tiny_pretrained, "bert-tiny")
    (tmp_path / "tagged.conll").write_text("-DOCSTART- O\n\nEU I-ORG\nrejects O\n\nPeter I-PER\n")
    (tmp_path / "words.conll").write_text("EU\nrejects\n\nPeter\nBlackburn\n")
    (tmp_path / "plain.txt").write_text("EU rejects German call\n\n  Peter   Blackburn \n")
    tagged = task.read_inputs(str(tmp_path / "tagged.conll"))
    assert [e.words for e in tagged] == [["EU", "rejects"], ["Peter"]]
    assert tagged[0].tags == ["I-ORG", "O"]
    words = task.read_inputs(str(tmp_path / "words.conll"))
    assert [e.words for e in words] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    plain = task.read_inputs(str(tmp_path / "plain.txt"))
    assert [e.words for e in plain] == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]
    rows = task.predict(model, plain, batch_size=2)
    assert [sorted(row) for row in rows] == [["predicted", "words"]] * 2
    assert [len(row["predicted"]) for row in rows] == [4, 2]


def test_decoder_model_trains_and_predicts(tiny_pretrained) -> None:
    task, model = _task(tiny_pretrained, "gpt2-tiny")
    batch = task.collate(task.features(_examples()))
    loss = task.loss(model, batch)
    loss.backward()
    # A fresh head (std 0.02) scores the 9 labels about equally: loss near ln 9.
    assert loss.item() == pytest.approx(math.log(9), rel=0.1)
    assert all(p.grad is not None for p in model.head.parameters())


def test_encoder_decoder_models_are_refused(tiny_pretrained) -> None:
    backbone, tokenizer, _ = load_pretrained(tiny_pretrained("bert-tiny"))
    config = dataclasses.replace(backbone.config, family="encoder_decoder")
    with pytest.raises(LmforgeError, match="cannot do `tag`"):
        TaggingTask(TagOptions(), tokenizer, config)


def test_tiny_model_overfits_a_few_sentences(tiny_pretrained) -> None:
    task, model = _task(tiny_pretrained, "bert-tiny")
    examples = _examples()
    batch = task.collate(task.features(examples))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(50):
        optimizer.zero_grad()
        loss = task.loss(model, batch)
        loss.backward()
        optimizer.step()
    metrics, rows = task.evaluate(model, examples, batch_size=3)
    assert loss.item() < 0.05
    assert metrics["f1"] > 95 and metrics["accuracy"] > 98
    assert metrics.keys() >= {"precision", "recall", "f1", "accuracy", "f1_PER"}
    # Rows are in the input's scheme (IOB1), words untouched.
    assert [row["words"] for row in rows] == [e.words for e in examples]
    assert rows[0]["predicted"] == rows[0]["tags"] == SENTENCES[0][1].split()
    assert model.training  # evaluate puts the model back in the mode it found it in


def _conll_slice(source: str, path: Path, num_sentences: int) -> Path:
    """The first sentences of a shared CoNLL-2003 file (DOCSTART blocks included)."""
    blocks = shared_file(source).read_text().split("\n\n")[:num_sentences]
    path.write_text("\n\n".join(blocks) + "\n")
    return path


def test_finetune_tag_and_predict_end_to_end(tiny_pretrained, tmp_path: Path) -> None:
    train = _conll_slice("conll2003/eng.train", tmp_path / "train.conll", 48)
    dev = _conll_slice("conll2003/eng.testa", tmp_path / "dev.conll", 16)
    run = tmp_path / "run"
    code = main(["finetune", "tag", str(tiny_pretrained("bert-tiny")), f"--run.dir={run}",
                 f"--data.train={train}", f"--data.validation={dev}", "--train.epochs=1",
                 *FAST])  # fmt: skip
    assert code == 0
    results = json.loads((run / "metrics.json").read_text())
    assert {"precision", "recall", "f1", "accuracy"} <= set(results["validation"])
    assert 0 <= results["validation"]["f1"] <= 100
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 15  # 16 blocks, the first a -DOCSTART- line
    assert rows[0]["words"][:2] == ["CRICKET", "-"] and rows[0]["tags"][0] == "O"
    assert all(len(row["predicted"]) == len(row["words"]) for row in rows)
    # Predictions are written in the file's scheme, IOB1: an entity never starts with B- after O.
    assert all(
        not (tag.startswith("B-") and (i == 0 or row["predicted"][i - 1] == "O"))
        for row in rows
        for i, tag in enumerate(row["predicted"])
    )
    inputs = tmp_path / "new.txt"
    inputs.write_text("Peter Blackburn visited Brussels .\nEU rejects German call\n")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(run), "--input", str(inputs), "--output", str(out)]) == 0
    predicted = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["words"] for row in predicted] == [
        ["Peter", "Blackburn", "visited", "Brussels", "."], ["EU", "rejects", "German", "call"],
    ]  # fmt: skip
    assert [len(row["predicted"]) for row in predicted] == [5, 4]


def test_unseen_validation_tag_is_one_clear_line(tiny_pretrained, tmp_path: Path, capsys) -> None:
    train = _conll_slice("conll2003/eng.train", tmp_path / "train.conll", 8)
    dev = tmp_path / "dev.conll"
    dev.write_text("Olympics B-EVENT\nopen O\n")
    code = main(["finetune", "tag", str(tiny_pretrained("bert-tiny")),
                 f"--run.dir={tmp_path / 'run'}", f"--data.train={train}",
                 f"--data.validation={dev}", *FAST])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert f"tag B-EVENT in {dev} never occurs in the training data" in err
    assert len(err.strip().splitlines()) == 1
