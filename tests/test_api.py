"""The Python API (lmforge.api): the examples of docs/api.md run as written, and bad input raises
`LmforgeError` with the line the command line prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import lmforge
from lmforge.cli.main import main
from lmforge.errors import LmforgeError
from tests.conftest import REPO_ROOT

_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_docs_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ```python block of docs/api.md, in order, in one namespace, in an empty directory."""
    blocks = _PYTHON_BLOCK.findall((REPO_ROOT / "docs" / "api.md").read_text())
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, block in enumerate(blocks, start=1):
        exec(compile(block, f"docs/api.md, python block {number}", "exec"), namespace)
    assert (tmp_path / "runs" / "gpt" / "curves.png").is_file()
    assert (tmp_path / "runs" / "classify" / "metrics.json").is_file()


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err.removeprefix("error: ").rstrip("\n")


@pytest.mark.parametrize(
    ("preset", "call", "argv"),
    [
        ("gpt2-tiny", lambda p: p.fill_mask("a [MASK]."), ["fill-mask", "{path}", "a [MASK]."]),
        ("bert-tiny", lambda p: p.fill_mask("no mask"), ["fill-mask", "{path}", "no mask"]),
        ("bert-tiny", lambda p: p.generate("x"), ["generate", "{path}", "--prompt", "x"]),
        (
            "gpt2-tiny",
            lambda p: p.generate("x", temperature=-1),
            ["generate", "{path}", "--temperature", "-1"],
        ),
        ("t5-tiny", lambda p: p.generate(""), ["generate", "{path}"]),
    ],
)
def test_bad_input_raises_the_cli_message(
    tiny_pretrained, capsys: pytest.CaptureFixture, preset: str, call, argv: list[str]
) -> None:
    path = str(tiny_pretrained(preset))
    with pytest.raises(LmforgeError) as raised:
        call(lmforge.load(path, device="cpu"))
    assert str(raised.value) == _cli_error([a.format(path=path) for a in argv], capsys)


def test_several_encoder_decoder_inputs_are_padded_like_one(tiny_pretrained) -> None:
    t5 = lmforge.load(tiny_pretrained("t5-tiny"), device="cpu")
    prompts = ["a short input", "a much longer input than the first one is"]
    together = t5.generate(prompts, max_new_tokens=5, temperature=0)
    alone = [t5.generate(prompt, max_new_tokens=5, temperature=0)[0] for prompt in prompts]
    assert together == alone
