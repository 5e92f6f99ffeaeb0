"""Prompt/response pairs for causal (decoder-only) fine-tuning.

Formats, chosen by the path:

- `.jsonl`: one object per line holding `prompt_field` and `response_field` (strings; a list of
  strings as prompt is joined with spaces, a list as response is several references of which the
  first is trained on and compared with);
- `.tsv` (and any other suffix): one pair per line, prompt TAB response. Tabs and newlines cannot
  occur inside a column; write jsonl for multi-line prompts.

Without `require_response` (`lmforge predict`) the response may be absent: a jsonl line without the
field, a tsv line without a tab.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmforge.data.records import jsonl_records, read_text
from lmforge.errors import LmforgeError


@dataclass(frozen=True)
class PromptExample:
    prompt: str
    """Conditioning text: the model reads it, no loss is taken on it."""
    response: str | None
    """The text to produce after the prompt; None for inputs to predict."""


def read_prompts(
    path: str | Path,
    *,
    prompt_field: str = "prompt",
    response_field: str = "response",
    require_response: bool = True,
) -> list[PromptExample]:
    """The examples of a .jsonl or .tsv file, in file order; blank lines are skipped."""
    path = Path(path)
    text = read_text(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        fields = (prompt_field, response_field)
        examples = [
            _json_example(row, number, path, fields, require_response)
            for number, row in jsonl_records(text, path)
        ]
    else:
        examples = [
            _tsv_example(line, number, path, require_response)
            for number, line in enumerate(text.splitlines(), start=1)
            if line.strip()
        ]
    if not examples:
        raise LmforgeError(f"{path} holds no examples")
    return examples


def _json_example(
    row: dict, number: int, path: Path, fields: tuple[str, str], require_response: bool
) -> PromptExample:
    prompt_field, response_field = fields
    present = ", ".join(str(key) for key in row) or "none"
    if prompt_field not in row:
        raise LmforgeError(
            f"{path}:{number}: no field {prompt_field!r} (fields: {present}); "
            f"name the prompt field with --task.prompt_field=..."
        )
    if require_response and row.get(response_field) is None:
        raise LmforgeError(
            f"{path}:{number}: no field {response_field!r} (fields: {present}); "
            f"name the response field with --task.response_field=..."
        )
    prompt = _as_text(row[prompt_field], path, number, prompt_field, join=True)
    response = row.get(response_field)
    if response is not None:
        response = _as_text(response, path, number, response_field, join=False)
    return PromptExample(prompt, response)


def _as_text(value: object, path: Path, number: int, field: str, *, join: bool) -> str:
    """A string field, or a list of strings: joined (prompt sentences) or its first (references)."""
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return " ".join(value) if join else value[0]
    if not isinstance(value, str):
        raise LmforgeError(f"{path}:{number}: field {field!r} must be a string or list of strings")
    return value


def _tsv_example(line: str, number: int, path: Path, require_response: bool) -> PromptExample:
    prompt, has_tab, response = line.partition("\t")
    if "\t" in response:
        raise LmforgeError(
            f"{path}:{number}: expected two tab-separated columns (prompt, response), found more"
        )
    if require_response and not has_tab:
        raise LmforgeError(
            f"{path}:{number}: no response; write `prompt<TAB>response` per line, or use jsonl"
        )
    return PromptExample(prompt, response if has_tab else None)
