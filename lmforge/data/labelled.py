"""Labelled text for sentence classification: csv, tsv, jsonl and plain `LABEL TEXT` lines.

The plain format is the one of the SST and TREC releases (`1 a gorgeous , witty film .`,
`DESC:manner How did serfdom develop ?`): the first whitespace-separated field is the label.
Files are read as UTF-8; a file that is not valid UTF-8 is read as Latin-1 instead (TREC's train
files are Latin-1), with a warning.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.records import jsonl_records, read_text
from lmforge.errors import LmforgeError


@dataclass(frozen=True)
class ClassificationExample:
    texts: tuple[str, ...]
    """One text, or two for a sentence pair."""
    label: str | None
    """None for unlabelled inputs (prediction)."""
    location: str = dataclasses.field(default="", compare=False)
    """`FILE:LINE` of the example, for error messages; empty for texts given directly."""


def read_classification(
    path: str | Path, *, text_fields: list[str], label_field: str, labelled: bool = True
) -> list[ClassificationExample]:
    """Examples of a .csv/.tsv (header row), .jsonl or plain `LABEL TEXT` file, in file order.

    With labelled=False (inputs to predict) labels are optional, and each line of a plain file is
    a whole text.
    """
    path = Path(path)
    text = read_text(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        rows = _table_rows(text, "\t" if suffix == ".tsv" else ",", path)
    elif suffix in (".jsonl", ".json"):
        rows = list(jsonl_records(text, path))
    else:
        rows = _plain_rows(text, labelled, label_field)
    examples = [_example(row, line, path, text_fields, label_field, labelled) for line, row in rows]
    if not examples:
        raise LmforgeError(f"{path} holds no examples")
    return examples


def _table_rows(text: str, delimiter: str, path: Path) -> list[tuple[int, dict]]:
    # QUOTE_NONE for tsv: GLUE's tsv files hold unbalanced quotes inside sentences.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter, quoting=quoting)
    if not reader.fieldnames:
        raise LmforgeError(f"{path} is empty; expected a header row naming the columns")
    return [(reader.line_num, row) for row in reader]


def _plain_rows(text: str, labelled: bool, label_field: str) -> list[tuple[int, dict]]:
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if labelled:
            label, _, sentence = line.partition(" ")
            rows.append((line_number, {label_field: label, "text": sentence.strip()}))
        else:
            rows.append((line_number, {"text": line}))
    return rows


def _example(
    row: dict, line: int, path: Path, text_fields: list[str], label_field: str, labelled: bool
) -> ClassificationExample:
    if "text" in row and not any(field in row for field in text_fields):
        text_fields = ["text"]  # plain files have one text column whatever the csv names are
    texts = []
    for field in text_fields:
        value = row.get(field)
        if value is None:
            present = ", ".join(str(key) for key in row)
            raise LmforgeError(
                f"{path}:{line}: no text column {field!r} (columns: {present}); "
                f"name yours with --task.text_fields=..."
            )
        texts.append(str(value))
    label = row.get(label_field)
    if labelled and (label is None or str(label).strip() == ""):
        raise LmforgeError(
            f"{path}:{line}: no label in column {label_field!r}; "
            f"name the label column with --task.label_field=..."
        )
    if labelled and not texts[0].strip():
        raise LmforgeError(f"{path}:{line}: the example has a label but no text")
    label = None if label is None else str(label).strip()
    return ClassificationExample(tuple(texts), label, f"{path}:{line}")
