"""Reading (source, references) pairs for sequence-to-sequence fine-tuning.

Formats, chosen by the path:

- parallel text files (Multi30k, WMT): with `source_lang`/`target_lang` the path is a prefix read
  as PATH.SOURCE_LANG and PATH.TARGET_LANG, line i of one aligned with line i of the other;
- `.tsv` / `.csv`: two columns (source, target), or a header row naming `source_field` and
  `target_field` among other columns;
- `.jsonl`: one object per line with `source_field` and `target_field`. A list-valued source is
  joined with spaces (SciTLDR's sentence lists); a list-valued target is several references, the
  first of which is trained on (SciTLDR's dev and test TLDRs). `target_field` may name several
  comma-separated fields, each one more reference (DialogSum's summary1,summary2,summary3);
- `.json`: SQuAD v1.1 for generative QA, source `question: Q context: C` (T5's format, Raffel et
  al. 2020, appendix D), references = the answer texts; with `squad=True` (task.kind=qa) `.jsonl`
  files are also read by `lmforge.data.squad` (one question per line), as `finetune qa` reads them;
- any other file, for prediction only (targets not required): one source per line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.records import jsonl_records, read_text, text_lines
from lmforge.errors import LmforgeError


@dataclass
class Seq2SeqExample:
    source: str
    references: list[str]
    """Reference targets; the first one is trained on. Empty when the file has none (predict)."""
    id: str | None = None
    group: str | None = None
    """Examples sharing a group (a SQuAD article) stay on one side of a train/validation split."""


def read_pairs(
    path: str | Path,
    *,
    source_field: str = "source",
    target_field: str = "target",
    source_lang: str = "",
    target_lang: str = "",
    require_targets: bool = True,
    squad: bool = False,
) -> list[Seq2SeqExample]:
    """The examples of a file (or parallel-file prefix) in file order; see the module docstring.
    Without `require_targets` (`lmforge predict`) targets may be absent, files of an unknown
    suffix are read as one source per line, and a path that is a file is read as such even with
    `source_lang` set."""
    path = Path(path)
    # A run trained on parallel files still predicts for any single file of sources.
    if source_lang and (require_targets or not path.is_file()):
        return _read_parallel(path, source_lang, target_lang, require_targets)
    if not path.is_file():
        raise LmforgeError(f"{path} not found")
    suffix = path.suffix.lower()
    if suffix == ".json" or (squad and suffix == ".jsonl"):
        return read_squad_pairs(path)
    if suffix == ".jsonl":
        return _read_jsonl(path, source_field, target_field, require_targets)
    if suffix in (".tsv", ".csv"):
        return _read_table(path, source_field, target_field, require_targets)
    if not require_targets:
        return [Seq2SeqExample(line, []) for line in _read_lines(path)]
    raise LmforgeError(
        f"cannot tell the format of {path}: use .tsv, .csv, .jsonl, .json (SQuAD) or parallel "
        "text files with --task.source_lang=XX --task.target_lang=YY"
    )


def read_squad_pairs(path: Path) -> list[Seq2SeqExample]:
    """SQuAD JSON as generative QA: source `question: Q context: C`, references = answers."""
    from lmforge.data.squad import read_squad

    return [
        Seq2SeqExample(
            f"question: {qa.question} context: {qa.context}",
            list(qa.answers),
            id=qa.id,
            group=qa.title,
        )
        for qa in read_squad(str(path))
    ]


def _read_lines(path: Path) -> list[str]:
    """Lines of a file split on newlines only, so that parallel files stay aligned."""
    return text_lines(read_text(path))


def _read_parallel(
    prefix: Path, source_lang: str, target_lang: str, require_targets: bool
) -> list[Seq2SeqExample]:
    source_path = Path(f"{prefix}.{source_lang}")
    target_path = Path(f"{prefix}.{target_lang}")
    if not source_path.is_file():
        raise LmforgeError(
            f"{source_path} not found (with --task.source_lang the data path is a prefix: "
            f"{prefix}.{source_lang} and {prefix}.{target_lang})"
        )
    sources = _read_lines(source_path)
    if not target_path.is_file():
        if require_targets:
            raise LmforgeError(f"{target_path} not found: the target side of {source_path}")
        return [Seq2SeqExample(source, []) for source in sources]
    targets = _read_lines(target_path)
    if len(sources) != len(targets):
        raise LmforgeError(
            f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}; "
            "parallel files must be aligned line by line"
        )
    return [Seq2SeqExample(s, [t]) for s, t in zip(sources, targets, strict=True)]


def _as_source(value: object, where: str) -> str:
    if isinstance(value, list):
        return " ".join(str(part).strip() for part in value)
    if not isinstance(value, str):
        raise LmforgeError(f"{where}: the source must be a string or a list of strings")
    return value


def _as_references(value: object, where: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) for v in values):
        raise LmforgeError(f"{where}: the target must be a string or a non-empty list of strings")
    return list(values)


def _read_jsonl(
    path: Path, source_field: str, target_field: str, require_targets: bool
) -> list[Seq2SeqExample]:
    target_fields = [f.strip() for f in target_field.split(",") if f.strip()]
    examples = []
    for number, record in jsonl_records(read_text(path), path):
        where = f"{path} line {number}"
        wanted = [source_field, *target_fields] if require_targets else [source_field]
        missing = [f for f in wanted if f not in record]
        if missing:
            raise LmforgeError(
                f"{where} has no field {missing[0]!r} (fields: {', '.join(record) or 'none'}); "
                "name the fields with --task.source_field / --task.target_field"
            )
        references = [
            ref for f in target_fields if f in record for ref in _as_references(record[f], where)
        ]
        identifier = record.get("id")
        examples.append(
            Seq2SeqExample(
                _as_source(record[source_field], where),
                references,
                id=None if identifier is None else str(identifier),
            )
        )
    return examples


def _read_table(
    path: Path, source_field: str, target_field: str, require_targets: bool
) -> list[Seq2SeqExample]:
    if path.suffix.lower() == ".tsv":
        # Tab-separated files are not quoted (GLUE's convention): a quote is just a character.
        rows = list(csv.reader(_read_lines(path), delimiter="\t", quoting=csv.QUOTE_NONE))
    else:
        rows = list(csv.reader(_read_lines(path)))
    first_line = 1
    source_column, target_column = 0, 1
    if rows and source_field in rows[0] and (target_field in rows[0] or not require_targets):
        header = rows.pop(0)
        first_line = 2
        source_column = header.index(source_field)
        target_column = header.index(target_field) if target_field in header else -1
    examples = []
    for number, row in enumerate(rows, start=first_line):
        if not any(cell.strip() for cell in row):
            continue
        has_target = 0 <= target_column < len(row)
        if source_column >= len(row) or (require_targets and not has_target):
            raise LmforgeError(
                f"{path} line {number} has {len(row)} column(s); expected source and target "
                f"columns, or a header row naming {source_field!r} and {target_field!r}"
            )
        references = [row[target_column]] if has_target else []
        examples.append(Seq2SeqExample(row[source_column], references))
    return examples
