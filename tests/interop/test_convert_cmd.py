"""`lmforge convert --from-hf / --to-hf` on small random models saved locally (no downloads)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from lmforge.cli.main import main  # noqa: E402
from lmforge.models.pretrained import load_pretrained  # noqa: E402
from tests.interop.test_hf_parity import (  # noqa: E402
    CASES,
    UNEXPECTED,
    VOCAB,
    _batch,
    _random_hf_model,
    _randomise,
)

AUTO_CLASSES = {
    "gpt2": "AutoModelForCausalLM", "bloom": "AutoModelForCausalLM",
    "llama": "AutoModelForCausalLM",
    "bert": "AutoModelForMaskedLM", "roberta": "AutoModelForMaskedLM",
    "t5": "AutoModelForSeq2SeqLM", "bart": "AutoModelForSeq2SeqLM",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def _word_tokenizer():
    """A word-level tokenizer over VOCAB tokens, <|endoftext|> as bos/eos/pad."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1} | {f"w{i}": i for i in range(2, VOCAB)}
    inner = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=inner, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        pad_token="<|endoftext|>", unk_token="<unk>",
    )  # fmt: skip


def _auto_model(model_type: str, path):
    import transformers

    auto = getattr(transformers, AUTO_CLASSES[model_type])
    return auto.from_pretrained(str(path), output_loading_info=True)


@pytest.mark.parametrize(("model_type", "num_heads", "variant"), CASES)
def test_from_hf_then_to_hf_keeps_logits(tmp_path, model_type, num_heads, variant):
    hf_model = _random_hf_model(model_type, num_heads, variant)
    hf_model.save_pretrained(tmp_path / "hf")
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), str(tmp_path / "run")]) == 0
    assert main(["convert", "--to-hf", str(tmp_path / "run"), str(tmp_path / "back")]) == 0
    back, info = _auto_model(model_type, tmp_path / "back")
    assert not any(info[k] for k in ("missing_keys", "mismatched_keys"))
    assert info["unexpected_keys"] == UNEXPECTED.get(model_type, set())
    batch, keep = _batch(model_type)
    with torch.no_grad():
        expected, got = hf_model(**batch).logits, back.eval()(**batch).logits
    keep = keep.bool()
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=1e-4)


def test_gpt2_round_trip_with_tokenizer_runs_in_a_pipeline(tmp_path):
    """HF folder -> lmforge run (load_pretrained works) -> HF folder that AutoTokenizer and
    pipeline("text-generation") load, predicting the same next token as lmforge."""
    from transformers import AutoTokenizer, pipeline

    hf_model = _random_hf_model("gpt2", 4, "")
    hf_model.save_pretrained(tmp_path / "hf")
    _word_tokenizer().save_pretrained(str(tmp_path / "hf"))
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), str(tmp_path / "run")]) == 0
    model, tokenizer, _ = load_pretrained(tmp_path / "run")
    assert tokenizer.eos_id == 0 and tokenizer.encode("w5 w7") == [5, 7]
    assert main(["convert", "--to-hf", str(tmp_path / "run"), str(tmp_path / "out")]) == 0
    assert AutoTokenizer.from_pretrained(str(tmp_path / "out")).eos_token == "<|endoftext|>"
    prompt = "w5 w9 w17 w3"
    with torch.no_grad():
        ours = model(torch.tensor([tokenizer.encode(prompt)])).logits[0, -1].argmax().item()
    generator = pipeline("text-generation", model=str(tmp_path / "out"), device="cpu")
    text = generator(prompt, max_new_tokens=1, do_sample=False, return_full_text=False)
    assert text[0]["generated_text"].split() == [f"w{ours}"]


def _run_error(argv, capsys) -> str:
    capsys.readouterr()  # drop what building the input printed (save_pretrained's progress)
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_unsupported_architecture_is_one_line(tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    line = _run_error(["convert", "--from-hf", str(tmp_path / "hf"), str(tmp_path / "o")], capsys)
    assert "'mistral' is not supported" in line
    assert not (tmp_path / "o").exists()


def test_missing_weight_file_is_one_line(tmp_path, capsys):
    _random_hf_model("bert", 4, "").config.save_pretrained(tmp_path / "hf")
    line = _run_error(["convert", "--from-hf", str(tmp_path / "hf"), str(tmp_path / "o")], capsys)
    assert "has no model.safetensors" in line


def test_config_disagreeing_with_weights_is_one_line(tmp_path, capsys):
    _random_hf_model("t5", 4, "untied").save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["d_ff"] = 96  # the weights say 80
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    line = _run_error(["convert", "--from-hf", str(tmp_path / "hf"), str(tmp_path / "o")], capsys)
    assert "mis-shaped" in line and "DenseReluDense.wi_0.weight" in line


def _special_word_tokenizer(specials: list[str], **roles: str):
    """A word-level tokenizer: `specials` first, then words w{i} up to VOCAB ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(specials)}
    vocab |= {f"w{i}": i for i in range(len(specials), VOCAB)}
    inner = Tokenizer(models.WordLevel(vocab, unk_token=roles["unk_token"]))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=inner, **roles)


def test_bert_export_runs_in_the_fill_mask_pipeline(tmp_path):
    """An exported encoder fills the mask in transformers' pipeline as lmforge does (framed as
    [CLS] ... [SEP] on both sides)."""
    from transformers import pipeline

    from lmforge.data.framing import framing_for

    hf_model = _random_hf_model("bert", 4, "")
    hf_model.save_pretrained(tmp_path / "hf")
    tokenizer = _special_word_tokenizer(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], pad_token="[PAD]", unk_token="[UNK]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    tokenizer.save_pretrained(str(tmp_path / "hf"))
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), str(tmp_path / "run")]) == 0
    assert main(["convert", "--to-hf", str(tmp_path / "run"), str(tmp_path / "out")]) == 0
    model, ours_tokenizer, _ = load_pretrained(tmp_path / "run")
    text = "w9 w17 [MASK] w33 w5"
    framing = framing_for(ours_tokenizer, model.config.family)
    ids = torch.tensor([framing.single(ours_tokenizer.encode(text))])
    with torch.no_grad():
        logits = model(ids).logits[0, 3]
    expected = ours_tokenizer.decode([logits.argmax().item()])
    filler = pipeline("fill-mask", model=str(tmp_path / "out"), device="cpu")
    assert filler(text, top_k=1)[0]["token_str"].strip() == expected


def test_t5_export_generates_in_transformers_as_in_lmforge(tmp_path):
    """An exported seq2seq model, loaded by AutoTokenizer and AutoModelForSeq2SeqLM, generates what
    lmforge generates (transformers 5 removed the text2text-generation pipeline; this is what it
    did: tokenize, generate, decode)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from lmforge.data.framing import framing_for
    from lmforge.generation.search import SamplingConfig, generate_seq2seq

    hf_model = _random_hf_model("t5", 4, "untied")
    hf_model.config.num_decoder_layers = hf_model.config.num_layers  # see test_hf_parity
    hf_model = _randomise(type(hf_model)(hf_model.config).float())
    hf_model.save_pretrained(tmp_path / "hf")
    tokenizer = _special_word_tokenizer(
        ["<pad>", "</s>", "<unk>"], pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(str(tmp_path / "hf"))
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), str(tmp_path / "run")]) == 0
    assert main(["convert", "--to-hf", str(tmp_path / "run"), str(tmp_path / "out")]) == 0
    model, ours_tokenizer, _ = load_pretrained(tmp_path / "run")
    text = "w9 w17 w40 w33 w5"
    source = framing_for(ours_tokenizer, model.config.family).single(ours_tokenizer.encode(text))
    ours = generate_seq2seq(
        model, torch.tensor([source]), decoder_start_id=0,
        sampling=SamplingConfig(max_new_tokens=6, temperature=0.0), eos_id=1,
    )  # fmt: skip
    expected = ours_tokenizer.decode(ours[0, 1:].tolist(), skip_special_tokens=True)
    hf_tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    exported = AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path / "out")).eval()
    inputs = hf_tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        output = exported.generate(**inputs, max_new_tokens=6, do_sample=False, num_beams=1)
    decoded = hf_tokenizer.decode(output[0], skip_special_tokens=True)
    assert decoded.split() == expected.split()


def test_bare_bert_body_converts_with_a_fresh_head(tmp_path):
    """A BertModel checkpoint without its MLM head (sentence-transformers style, whose
    tokenizer.json pads every input to a fixed length) converts: the body reproduces the
    reference hidden states, the head starts fresh, and encoding is not padded."""
    from transformers import BertModel

    hf_model = BertModel(_random_hf_model("bert", 4, "").config).eval()
    hf_model.save_pretrained(tmp_path / "hf")
    tokenizer = _word_tokenizer()
    tokenizer.backend_tokenizer.enable_padding(length=16, pad_id=0, pad_token="<|endoftext|>")
    tokenizer.save_pretrained(str(tmp_path / "hf"))
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), str(tmp_path / "run")]) == 0
    model, ours, _ = load_pretrained(tmp_path / "run")
    batch, keep = _batch("bert")
    with torch.no_grad():
        expected = hf_model(**batch).last_hidden_state
        got = model.hidden_states(batch["input_ids"], attention_mask=batch["attention_mask"])
    keep = keep.bool()
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=1e-4)
    assert torch.equal(model.lm_head.transform.norm.weight, torch.ones(model.config.d_model))
    assert ours.encode("w5 w6") == [5, 6]


def test_converted_transformers_model_fine_tunes_and_predicts(tmp_path):
    """A converted transformers BERT goes through `lmforge finetune classify` and `predict` like
    a pretraining run of our own."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(specials)}
    vocab |= {f"w{i}": i for i in range(len(specials), VOCAB)}
    inner = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=inner, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    hf_model = _random_hf_model("bert", 4, "")
    hf_model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(str(tmp_path / "hf"))
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), str(tmp_path / "bert")]) == 0
    # Label 1 when the sentence holds w7: learnable from the tokens alone.
    lines = [f"{int(i % 2 == 1)} w{5 + i % 3} w{7 if i % 2 else 8} w9" for i in range(24)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    code = main(["finetune", "classify", str(tmp_path / "bert"), f"--run.dir={run}",
                 f"--data.train={tmp_path / 'train.txt'}", "--data.validation_split=0.25",
                 "--train.epochs=2", "--train.batch_size=6", "--log.progress=false",
                 "--log.tensorboard=false"])  # fmt: skip
    assert code == 0
    assert json.loads((run / "metrics.json").read_text())["validation_examples"] == 6
    new = tmp_path / "new.txt"
    new.write_text("w5 w7 w9\n")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(run), "--input", str(new), "--output", str(out)]) == 0
    assert json.loads(out.read_text())["prediction"] in {"0", "1"}


@pytest.fixture
def gpt2_dir(tmp_path):
    """A tiny random GPT-2 folder as save_pretrained writes it (config.json, model.safetensors)."""
    _random_hf_model("gpt2", 4, "").save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def _convert_error(hf_dir, capsys) -> str:
    out = hf_dir.parent / "out"
    line = _run_error(["convert", "--from-hf", str(hf_dir), str(out)], capsys)
    assert not out.exists()
    return line


def test_malformed_config_json_is_one_line(gpt2_dir, capsys):
    (gpt2_dir / "config.json").write_text('{"model_type": "gpt2", "n_embd": ')
    assert "config.json is not valid JSON" in _convert_error(gpt2_dir, capsys)


def test_config_field_of_the_wrong_type_is_one_line(gpt2_dir, capsys):
    config = json.loads((gpt2_dir / "config.json").read_text())
    (gpt2_dir / "config.json").write_text(json.dumps(config | {"n_embd": "wide"}))
    line = _convert_error(gpt2_dir, capsys)
    assert "is not a valid gpt2 config" in line and "n_embd" in line


def test_truncated_safetensors_is_one_line(gpt2_dir, capsys):
    weights = gpt2_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert "model.safetensors is truncated or corrupt" in _convert_error(gpt2_dir, capsys)


def test_pickled_weights_are_refused_with_the_conversion_command(gpt2_dir, capsys):
    """A folder with only pytorch_model.bin is refused (never unpickled); the command the message
    gives turns it into a folder that converts."""
    import os
    import re
    import subprocess
    import sys

    state = _auto_model("gpt2", gpt2_dir)[0].state_dict()
    (gpt2_dir / "model.safetensors").unlink()
    torch.save(state, gpt2_dir / "pytorch_model.bin")
    line = _convert_error(gpt2_dir, capsys)
    assert "only pickled weights (pytorch_model.bin), which lmforge never loads" in line
    command = re.search(r'python -c "(.*?)"', line).group(1)
    subprocess.run([sys.executable, "-c", command], cwd=gpt2_dir, check=True, env=os.environ)
    out = gpt2_dir.parent / "converted"
    assert main(["convert", "--from-hf", str(gpt2_dir), str(out)]) == 0


def test_index_naming_a_missing_shard_is_one_line(tmp_path, capsys):
    _random_hf_model("gpt2", 4, "").save_pretrained(tmp_path / "hf", max_shard_size="50KB")
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    (tmp_path / "hf" / shard).unlink()
    assert f"{shard} is missing" in _convert_error(tmp_path / "hf", capsys)


def test_malformed_index_is_one_line(tmp_path, capsys):
    _random_hf_model("gpt2", 4, "").save_pretrained(tmp_path / "hf", max_shard_size="50KB")
    (tmp_path / "hf" / "model.safetensors.index.json").write_text('{"metadata": {}}')
    assert "is not a valid weight index" in _convert_error(tmp_path / "hf", capsys)


def test_unreadable_tokenizer_file_is_one_line(gpt2_dir, capsys):
    (gpt2_dir / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"')
    line = _convert_error(gpt2_dir, capsys)
    assert "tokenizer files" in line and "cannot be read" in line
