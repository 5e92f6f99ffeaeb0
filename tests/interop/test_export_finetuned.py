"""`convert --to-hf` of fine-tuned runs: the transformers task class with our head, our labels and a
tokenizer that frames as the task, so that its logits and `pipeline("text-classification")` give
what lmforge gives; heads transformers cannot hold are refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from lmforge.cli.main import main  # noqa: E402
from lmforge.data.labelled import ClassificationExample  # noqa: E402
from lmforge.interop.hf.task_models import build_hf_task_model  # noqa: E402
from lmforge.models.pretrained import load_pretrained  # noqa: E402
from lmforge.tasks.finetuned import load_finetuned  # noqa: E402
from tests.interop.test_export_framing import RESHAPED, reshaped_run  # noqa: E402

TEXTS = [
    "the function returns a list", "an error is raised", "the module defines a class",
    "a value is not found", "the object returns a string", "the error was raised here",
]  # fmt: skip
TRAIN = [f"{'error' if 'error' in t or 'not' in t else 'fine'} {t}" for t in TEXTS * 4]


@pytest.fixture
def finetuned(tiny_pretrained, tmp_path):  # noqa: ANN001, ANN201
    """`finetuned("bert")` -> a classify run fine-tuned (one epoch) from the tiny pretrained one
    (resized where transformers needs it, see test_export_framing)."""

    def make(name: str):  # noqa: ANN202
        (tmp_path / "train.txt").write_text("\n".join(TRAIN) + "\n")
        pretrained, run = tiny_pretrained(f"{name}-tiny"), tmp_path / "run"
        if name in RESHAPED:
            pretrained = reshaped_run(pretrained, tmp_path / name, RESHAPED[name])
        code = main(["finetune", "classify", str(pretrained),
                     f"--run.dir={run}", f"--data.train={tmp_path / 'train.txt'}",
                     "--data.validation_split=0.25", "--train.epochs=1", "--train.batch_size=6",
                     "--log.progress=false", "--log.tensorboard=false"])  # fmt: skip
        assert code == 0
        return run

    return make


def _their_logits(model, batch: dict[str, torch.Tensor], has_segments: bool) -> torch.Tensor:  # noqa: ANN001
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if has_segments:
        inputs["token_type_ids"] = batch["segment_ids"]
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("name", ["bert", "roberta", "gpt2", "llama"])
def test_classify_export_gives_lmforge_logits_and_labels(finetuned, tmp_path, name, capsys):
    from transformers import AutoModelForSequenceClassification, pipeline

    run = finetuned(name)
    task, model = load_finetuned(run)
    out = tmp_path / "out"
    if name in ("gpt2", "llama") and model.head.proj.bias is not None:
        # GPT2ForSequenceClassification's (LlamaFor...'s) score layer has no bias: refused.
        capsys.readouterr()
        assert main(["convert", "--to-hf", str(run), str(out)]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and "no place for head.proj.bias" in error[0]
        return
    assert main(["convert", "--to-hf", str(run), str(out)]) == 0
    exported, info = AutoModelForSequenceClassification.from_pretrained(
        str(out), output_loading_info=True
    )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert exported.config.id2label == dict(enumerate(task.labels))
    examples = [ClassificationExample((text,), None) for text in TEXTS]
    batch = task.collate(task.features(examples))
    with torch.no_grad():
        ours = model(batch["input_ids"], batch["attention_mask"], batch["segment_ids"])
    theirs = _their_logits(exported.eval(), batch, task.framing.has_segments)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
    predicted = [row["prediction"] for row in task.predict(model, examples, batch_size=8)]
    classifier = pipeline("text-classification", model=str(out), device="cpu")
    assert [row["label"] for row in classifier(TEXTS)] == predicted
    assert json.loads((out / "config.json").read_text())["architectures"] == [
        type(exported).__name__
    ]


@pytest.mark.parametrize(
    ("name", "kind"),
    [("bert", "token"), ("bert", "span"), ("roberta", "token"), ("roberta", "span"),
     ("gpt2", "token"), ("llama", "token")],
)  # fmt: skip
def test_token_and_span_heads_export_with_their_logits(tiny_pretrained, name, kind):
    """Tagging and QA models (a random head on the tiny backbone) in ...ForTokenClassification and
    ...ForQuestionAnswering: the same per-position scores."""
    backbone, tokenizer, _ = load_pretrained(tiny_pretrained(f"{name}-tiny"))
    labels = ["O", "B-X", "I-X"] if kind == "token" else ["start", "end"]
    ours = _task_model("tag" if kind == "token" else "qa", backbone, tokenizer, labels)
    torch.nn.init.normal_(ours.head.proj.bias)
    theirs = build_hf_task_model(backbone.config, ours.state_dict(), kind, labels, dropout=0.1)
    suffix = "ForTokenClassification" if kind == "token" else "ForQuestionAnswering"
    assert type(theirs).__name__.endswith(suffix)
    ids = torch.tensor([tokenizer.encode(TEXTS[0])])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = ours.eval()(ids, mask)
        output = theirs(input_ids=ids, attention_mask=mask)
    got = (
        output.logits
        if kind == "token"
        else torch.stack([output.start_logits, output.end_logits], dim=-1)
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def _task_model(name: str, backbone, tokenizer, labels: list[str]):  # noqa: ANN001, ANN202
    """The model `lmforge finetune NAME` builds on `backbone`, with a head for `labels`."""
    from lmforge.config.finetune import task_entry
    from lmforge.tasks.base import task_class

    task = task_class(name)(task_entry(name).options(), tokenizer, backbone.config)
    task.labels = labels
    return task.build_model(backbone)


def test_a_head_transformers_lacks_is_refused_in_one_line(tiny_pretrained):
    from lmforge.errors import LmforgeError

    gpt2, _, _ = load_pretrained(tiny_pretrained("gpt2-tiny"))
    # (lmforge's qa task refuses decoders; the class is looked up before any weight is read)
    with pytest.raises(LmforgeError, match="gpt2 model with a span head cannot be exported"):
        build_hf_task_model(gpt2.config, {}, "span", ["start", "end"], dropout=None)


def test_generative_classify_run_exports_its_seq2seq_model(finetuned, tmp_path):
    """T5 classifies by generating the label's word: the export is the seq2seq model, and
    transformers' generate on the exported tokenizer's input gives lmforge's predictions."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    run = finetuned("t5")
    task, model = load_finetuned(run)
    assert main(["convert", "--to-hf", str(run), str(tmp_path / "out")]) == 0
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    exported = AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path / "out")).eval()
    examples = [ClassificationExample((text,), None) for text in TEXTS]
    predicted = [row["prediction"] for row in task.predict(model, examples, batch_size=8)]
    # lmforge decodes as many tokens as the longest label's framed word has (the labels are words).
    longest = max(len(task.framing.single(task.tokenizer.encode(label))) for label in task.labels)
    inputs = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        output = exported.generate(**inputs, max_new_tokens=longest, do_sample=False, num_beams=1)
    texts = tokenizer.batch_decode(output, skip_special_tokens=True)
    assert [text.strip() for text in texts] == predicted
