"""Causal fine-tuning: prompt/response files, response-only labels, left truncation, a tiny GPT-2
that learns to answer eight prompts, and `lmforge finetune causal` + `predict` on DialogSum."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmforge.cli.main import main
from lmforge.config.finetune import CausalOptions
from lmforge.data.prompts import PromptExample, read_prompts
from lmforge.errors import LmforgeError
from lmforge.models.heads import IGNORE_INDEX
from lmforge.models.pretrained import load_pretrained
from lmforge.tasks.causal import CausalTask
from tests.conftest import shared_file

PAIRS = [
    ("Q: colour of the sky?\nA:", " blue"),
    ("Q: colour of grass?\nA:", " green"),
    ("Q: two plus two?\nA:", " four"),
    ("Q: capital of France?\nA:", " Paris, the city of light"),
    ("Q: opposite of up?\nA:", " down"),
    ("Q: first letter?\nA:", " the letter a"),
    ("Q: language of this project?\nA:", " Python"),
    ("Q: a day has how many hours?\nA:", " twenty four hours"),
]


def _task(tiny_pretrained, **options) -> tuple[CausalTask, torch.nn.Module]:
    model, tokenizer, _ = load_pretrained(tiny_pretrained("gpt2-tiny"))
    return CausalTask(CausalOptions(**options), tokenizer, model.config), model


def test_reads_jsonl_and_tsv(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"prompt": "Q: hi\\nA:", "response": " hello"}\n\n')
    (tmp_path / "b.jsonl").write_text('{"q": ["two", "sentences"], "a": ["ref 1", "ref 2"]}\n')
    (tmp_path / "c.tsv").write_text("translate cat:\tchat\nempty answer:\t\n")
    assert read_prompts(tmp_path / "a.jsonl") == [PromptExample("Q: hi\nA:", " hello")]
    # A list prompt is joined (sentences); a list response is references, the first trained on.
    assert read_prompts(tmp_path / "b.jsonl", prompt_field="q", response_field="a") == [
        PromptExample("two sentences", "ref 1")
    ]
    assert read_prompts(tmp_path / "c.tsv") == [
        PromptExample("translate cat:", "chat"),
        PromptExample("empty answer:", ""),
    ]


def test_missing_field_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"prompt": "p", "response": "r"}\n{"prompt": "p"}\n')
    with pytest.raises(LmforgeError, match=r"a\.jsonl:2: no field 'response' \(fields: prompt\)"):
        read_prompts(tmp_path / "a.jsonl")
    (tmp_path / "b.tsv").write_text("p\tr\n\nno tab here\n")
    with pytest.raises(LmforgeError, match=r"b\.tsv:3: no response"):
        read_prompts(tmp_path / "b.tsv")


def test_inputs_to_predict_need_no_response(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"prompt": "p"}\n')
    (tmp_path / "b.tsv").write_text("just a prompt\n")
    assert read_prompts(tmp_path / "a.jsonl", require_response=False) == [PromptExample("p", None)]
    assert read_prompts(tmp_path / "b.tsv", require_response=False) == [
        PromptExample("just a prompt", None)
    ]


def test_labels_are_next_tokens_of_the_response_only(tiny_pretrained) -> None:
    task, _ = _task(tiny_pretrained)
    prompt, response = task.tokenizer.encode(PAIRS[3][0]), task.tokenizer.encode(PAIRS[3][1])
    (feature,) = task.features([PromptExample(*PAIRS[3])])
    eos = task.tokenizer.eos_id
    assert feature.input_ids == [task.tokenizer.separator_id, *prompt, *response, eos]
    # Aligned labels: position t holds token t + 1 where that token is part of the response.
    assert feature.labels == [IGNORE_INDEX] * len(prompt) + response + [eos, IGNORE_INDEX]
    targets = [i for i, label in enumerate(feature.labels) if label != IGNORE_INDEX]
    assert [feature.input_ids[t + 1] for t in targets] == [*response, eos]


def test_truncation_cuts_the_prompt_from_the_left(tiny_pretrained) -> None:
    task, _ = _task(tiny_pretrained, max_length=8)
    feature = task._feature(list(range(100, 110)), [7, 8, 9])
    assert feature.input_ids == [task.start_id, 107, 108, 109, 7, 8, 9, task.end_id]
    assert feature.labels == [IGNORE_INDEX] * 3 + [7, 8, 9, task.end_id, IGNORE_INDEX]
    # A response longer than the window keeps its start and loses its end (and eos).
    long = task._feature([100, 101], list(range(20)))
    assert long.input_ids == [task.start_id, *range(7)]
    assert long.labels == [*range(7), IGNORE_INDEX]


def test_loss_is_cross_entropy_of_response_tokens(tiny_pretrained) -> None:
    task, model = _task(tiny_pretrained)
    batch = task.collate(task.features([PromptExample(*pair) for pair in PAIRS[:3]]))
    assert batch["labels"][batch["attention_mask"] == 0].eq(IGNORE_INDEX).all()
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())
    assert task.loss(model, batch).item() == pytest.approx(expected.item(), rel=1e-5)


def test_overfits_pairs_and_generates_the_responses(tiny_pretrained) -> None:
    task, model = _task(tiny_pretrained, max_new_tokens=24)
    examples = [PromptExample(*pair) for pair in PAIRS]
    batch = task.collate(task.features(examples))
    before = task.loss(model, batch).item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(45):
        optimizer.zero_grad()
        task.loss(model, batch).backward()
        optimizer.step()
    metrics, rows = task.evaluate(model, examples, batch_size=3)
    assert metrics["loss"] < before / 20
    assert metrics["token_accuracy"] == 100.0
    assert [row["prediction"] for row in rows] == [response.strip() for _, response in PAIRS]
    assert metrics["exact_match"] == metrics["f1"] == 100.0
    assert metrics["perplexity"] == pytest.approx(torch.tensor(metrics["loss"]).exp().item())
    assert model.training  # evaluate restores the mode it found
    predicted = task.predict(model, [PromptExample(PAIRS[2][0], None)], batch_size=1)
    assert predicted == [{"prompt": PAIRS[2][0], "prediction": "four"}]


def test_refuses_models_that_are_not_decoders(tiny_pretrained) -> None:
    model, tokenizer, _ = load_pretrained(tiny_pretrained("bert-tiny"))
    with pytest.raises(LmforgeError, match="encoder model cannot do `causal`"):
        CausalTask(CausalOptions(), tokenizer, model.config)


def test_refuses_max_new_tokens_that_fill_the_positions(tiny_pretrained) -> None:
    with pytest.raises(LmforgeError, match="task.max_new_tokens .* leaves no room"):
        _task(tiny_pretrained, max_new_tokens=255)


def test_finetune_causal_and_predict_end_to_end(tiny_pretrained, tmp_path: Path) -> None:
    lines = shared_file("dialogsum/dialogsum.train.first1500.jsonl").read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:24]) + "\n")
    (tmp_path / "dev.jsonl").write_text("\n".join(lines[24:30]) + "\n")
    run = tmp_path / "run"
    code = main(["finetune", "causal", str(tiny_pretrained("gpt2-tiny")), f"--run.dir={run}",
                 f"--data.train={tmp_path / 'train.jsonl'}",
                 f"--data.validation={tmp_path / 'dev.jsonl'}", "--train.epochs=1",
                 "--train.batch_size=8", "--task.prompt_field=dialogue",
                 "--task.response_field=summary", "--task.max_length=96",
                 "--task.max_new_tokens=8", "--log.progress=false",
                 "--log.tensorboard=false"])  # fmt: skip
    assert code == 0
    results = json.loads((run / "metrics.json").read_text())
    assert {"loss", "perplexity", "token_accuracy", "exact_match", "f1"} == set(
        results["validation"]
    )
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and set(rows[0]) == {"prompt", "response", "prediction"}
    inputs = tmp_path / "inputs.tsv"
    inputs.write_text("#Person1#: Hello.\n#Person2#: Hi, how are you?\n".replace("\n", " ") + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(run), "--input", str(inputs), "--output", str(out)]) == 0
    (predicted,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert set(predicted) == {"prompt", "prediction"}
