"""Document sources: stream text documents out of files, globs, directories, HF datasets, builtins.

`iter_documents(spec)` yields `Document`s one at a time and never holds the corpus. Spec forms:

- a file path; a directory (its regular files, recursive, sorted, hidden names skipped); a glob;
- `hf:NAME` or `hf:NAME:CONFIG`: `datasets.load_dataset(NAME, CONFIG, split="train",
  streaming=True)`, never running a loading script (`trust_remote_code=False` where the installed
  `datasets` still has the argument). NAME may be a local script-free directory. For the
  packaged builders (`json`, `csv`, `parquet`, `text`, `arrow`) the third part is the data files
  instead:
  `hf:json:data/*.jsonl`, so local files go through the same code path as the Hub;
- `builtin:python-docs`: English prose every Python ships with (see `_python_docs`).

File formats by extension: `.jsonl` (field `text_field`), `.parquet` (column `text_field`), and
anything else as text, split by `split_by`: `file` (one document per file), `paragraph` (blank-line
separated) or `line` (one per non-empty line). `.gz` variants are decompressed on the fly.

Encoding policy: files are decoded with `encoding` (default utf-8); bytes invalid in it are
replaced by U+FFFD and counted in `Document.replaced_bytes`, so callers can report which files
were damaged and suggest `--encoding latin-1`. Any Python codec name is accepted.

Binary policy: a file that is not text (`binary.looks_binary`: a NUL or many control characters
in its first 8 KB; undecodable bytes alone are an encoding matter, above) is skipped with a
warning, its name added to the caller's `binary_files`; named alone, it is refused. Parquet files
are binary by design and are not checked.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import importlib
import inspect
import io
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from lmforge.data.binary import looks_binary
from lmforge.errors import LmforgeError

logger = logging.getLogger(__name__)

SplitBy = Literal["file", "paragraph", "line"]
SPLIT_BY: tuple[str, ...] = ("file", "paragraph", "line")
HF_PACKAGED_BUILDERS = ("json", "csv", "parquet", "text", "arrow")
PYTHON_DOCS = "builtin:python-docs"


@dataclass(frozen=True)
class Document:
    text: str
    source: str
    """The file (or spec, for hf: and builtin:) the document came from."""
    replaced_bytes: int = 0
    """Undecodable input bytes replaced by U+FFFD while reading this document."""


# A codec error handler that replaces like errors="replace" but counts the bytes it replaced.
# Decoding is single-threaded per process, so a module-level counter read before/after each
# document is exact per file (the attribution to individual documents within a file is not,
# because text is decoded in chunks).
_replaced = [0]


def _count_and_replace(error: UnicodeError) -> tuple[str, int]:
    if isinstance(error, UnicodeDecodeError):
        _replaced[0] += error.end - error.start
        return "\ufffd", error.end
    raise error


_ERRORS = "lmforge-count-replace"
codecs.register_error(_ERRORS, _count_and_replace)


def iter_documents(
    spec: str,
    *,
    split_by: str = "paragraph",
    text_field: str = "text",
    encoding: str = "utf-8",
    binary_files: list[str] | None = None,
) -> Iterator[Document]:
    """Yield the documents of one input spec, streaming; see the module docstring for specs.

    binary_files: receives the name of each file skipped as not text (the binary policy)."""
    if split_by not in SPLIT_BY:
        raise LmforgeError(f"unknown --split-by {split_by!r}; choose one of {', '.join(SPLIT_BY)}")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise LmforgeError(f"unknown --encoding {encoding!r}; use a Python codec name") from None
    if spec == PYTHON_DOCS:
        yield from (Document(text, PYTHON_DOCS) for text in _python_docs())
        return
    if spec.startswith("builtin:"):
        raise LmforgeError(f"unknown builtin corpus {spec!r}; available: {PYTHON_DOCS}")
    if spec.startswith("hf:"):
        yield from _iter_hf(spec, text_field)
        return
    files = resolve_files(spec)
    found = False
    for file in files:
        if not _is_parquet(file) and looks_binary(file, encoding):
            _skip_binary(file, alone=len(files) == 1 and not _has_magic(spec))
            if binary_files is not None:
                binary_files.append(str(file))
            continue
        count = 0
        for document in _iter_file(file, split_by, text_field, encoding):
            count += 1
            yield document
        if count == 0 and len(files) == 1 and not _has_magic(spec):
            raise LmforgeError(f"{file} holds no documents (empty input)")
        if count == 0:
            logger.warning("%s holds no documents; skipped", file)
        found = found or count > 0
    if not found:
        raise LmforgeError(
            f"{spec} holds no documents (all {len(files)} files are empty or not text)"
        )


def _skip_binary(file: Path, *, alone: bool) -> None:
    reason = "binary data (NUL bytes or control characters) in its first 8 KB"
    if alone:
        raise LmforgeError(f"{file} is not text: {reason}; pass text, .jsonl or .parquet files")
    logger.warning("%s is not text (%s); skipped", file, reason)


def describe_skipped(binary_files: list[str]) -> str:
    """One line for a summary: how many files were skipped as not text, and the first names."""
    shown = ", ".join(binary_files[:5]) + (
        f" and {len(binary_files) - 5} more" if len(binary_files) > 5 else ""
    )
    return f"skipped {len(binary_files)} file(s) that are not text: {shown}"


def describe_replaced(replaced_per_file: Mapping[str, int], encoding: str) -> str:
    """One line for a summary: how many bytes were not valid `encoding`, in which files."""
    files = list(replaced_per_file)
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return (
        f"{sum(replaced_per_file.values())} bytes were not valid {encoding} and became U+FFFD, "
        f"in {shown}; if these files use another encoding, pass it, e.g. --encoding latin-1"
    )


def check_spec(spec: str) -> None:
    """Fail early, before any work, on a local input that matches nothing."""
    if not spec.startswith(("hf:", "builtin:")):
        resolve_files(spec)


def _has_magic(spec: str) -> bool:
    return glob.has_magic(spec) or Path(spec).is_dir()


def resolve_files(spec: str) -> list[Path]:
    """The files a path, directory or glob names, sorted; an error when there are none."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = [
            p
            for p in sorted(path.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        ]
    elif glob.has_magic(spec):
        files = [Path(p) for p in sorted(glob.glob(spec, recursive=True)) if Path(p).is_file()]
    else:
        raise LmforgeError(f"input {spec} does not exist")
    if not files:
        raise LmforgeError(f"input {spec} matches no files")
    return files


def _open_text(file: Path, encoding: str) -> IO[str]:
    raw: IO[bytes] = gzip.open(file, "rb") if file.suffix == ".gz" else open(file, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding=encoding, errors=_ERRORS)


def _is_parquet(file: Path) -> bool:
    return file.name.removesuffix(".gz").endswith(".parquet")


def _iter_file(file: Path, split_by: str, text_field: str, encoding: str) -> Iterator[Document]:
    name = file.name.removesuffix(".gz")
    if _is_parquet(file):
        yield from _iter_parquet(file, text_field)
        return
    with _open_text(file, encoding) as stream:
        if name.endswith(".jsonl"):
            texts = _iter_jsonl(stream, file, text_field)
        else:
            texts = _split_text(stream, split_by)
        before = _replaced[0]
        for text in texts:
            now = _replaced[0]
            yield Document(text, str(file), now - before)
            before = now
        if _replaced[0] != before:  # bytes replaced in the last chunk, after the last document
            logger.debug(
                "%s: %d replaced bytes after the last document", file, _replaced[0] - before
            )


def _split_text(stream: IO[str], split_by: str) -> Iterator[str]:
    if split_by == "file":
        text = stream.read()
        if text.strip():
            yield text
        return
    if split_by == "line":
        for line in stream:
            line = line.rstrip("\n")
            if line.strip():
                yield line
        return
    paragraph: list[str] = []
    for line in stream:
        if line.strip():
            paragraph.append(line)
        elif paragraph:
            yield "".join(paragraph).rstrip("\n")
            paragraph = []
    if paragraph:
        yield "".join(paragraph).rstrip("\n")


def _iter_jsonl(stream: IO[str], file: Path, text_field: str) -> Iterator[str]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise LmforgeError(f"{file}:{number}: invalid JSON ({error.msg})") from None
        if not isinstance(record, dict) or text_field not in record:
            fields = sorted(record) if isinstance(record, dict) else []
            raise LmforgeError(
                f"{file}:{number}: no field {text_field!r}; available fields: {fields} "
                "(choose one with --text-field)"
            )
        text = record[text_field]
        if isinstance(text, str) and text.strip():
            yield text


def _iter_parquet(file: Path, text_field: str) -> Iterator[Document]:
    import pyarrow.parquet as pq  # lazily: only parquet inputs need pyarrow

    parquet = pq.ParquetFile(file)
    names = parquet.schema_arrow.names
    if text_field not in names:
        raise LmforgeError(
            f"{file}: no column {text_field!r}; available columns: {names} "
            "(choose one with --text-field)"
        )
    # Row batches keep memory bounded by the batch, not the file.
    for batch in parquet.iter_batches(batch_size=1024, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            if isinstance(text, str) and text.strip():
                yield Document(text, str(file))


def _iter_hf(spec: str, text_field: str) -> Iterator[Document]:
    try:
        import datasets
    except ImportError:
        raise LmforgeError(
            f"{spec} needs the `datasets` package: pip install 'lmforge[datasets]'"
        ) from None
    _, _, rest = spec.partition(":")
    name, _, config = rest.partition(":")
    if not name:
        raise LmforgeError(f"bad dataset spec {spec!r}; use hf:NAME or hf:NAME:CONFIG")
    kwargs: dict[str, object] = {"split": "train", "streaming": True}
    if name in HF_PACKAGED_BUILDERS and config:
        kwargs["data_files"] = config  # hf:json:PATH_OR_GLOB
    elif config:
        kwargs["name"] = config
    if "trust_remote_code" in inspect.signature(datasets.load_dataset).parameters:
        # datasets 2.x runs a dataset repository's loading script when allowed (before 2.20 by
        # default); say no explicitly. datasets >= 4 runs no scripts and has no such argument.
        kwargs["trust_remote_code"] = False
    try:
        dataset = datasets.load_dataset(name, **kwargs)
        rows = iter(dataset)
        first = next(rows, None)
    except Exception as error:  # datasets raises many types (hub, file, config errors)
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LmforgeError(f"cannot load dataset {spec}: {message}") from None
    if first is None:
        raise LmforgeError(f"dataset {spec} is empty")
    if text_field not in first:
        raise LmforgeError(
            f"dataset {spec} has no field {text_field!r}; available fields: {sorted(first)} "
            "(choose one with --text-field)"
        )
    for row in _chain_one(first, rows):
        text = row[text_field]
        if isinstance(text, str) and text.strip():
            yield Document(text, spec)


def _chain_one(first: dict, rest: Iterator[dict]) -> Iterator[dict]:
    yield first
    yield from rest


# A fixed list, so the corpus is the same on every machine running the same Python. Every module
# here imports without side effects (no printing, no browser, no GUI) on Linux, macOS and Windows;
# those that do not import on some platform are skipped there.
_PYTHON_DOCS_MODULES = """
abc argparse array ast asyncio base64 bdb binascii bisect builtins bz2 calendar cmath cmd code
codecs codeop collections collections.abc colorsys compileall concurrent.futures configparser
contextlib contextvars copy copyreg cProfile csv ctypes dataclasses datetime decimal difflib dis
doctest email email.message email.parser email.policy email.utils encodings enum errno
faulthandler filecmp fileinput fnmatch fractions ftplib functools gc getopt getpass gettext glob
graphlib gzip hashlib heapq hmac html html.parser http http.client http.cookiejar http.cookies
http.server imaplib importlib importlib.abc importlib.metadata importlib.resources
importlib.util inspect io ipaddress itertools json json.decoder json.encoder keyword linecache
locale logging logging.config logging.handlers lzma mailbox marshal math mimetypes mmap
modulefinder multiprocessing multiprocessing.pool multiprocessing.shared_memory netrc numbers
operator optparse os os.path pathlib pdb pickle pickletools pkgutil platform plistlib poplib
pprint profile pstats py_compile pyclbr pydoc queue quopri random re reprlib rlcompleter runpy
sched secrets select selectors shelve shlex shutil signal site smtplib socket socketserver sqlite3
ssl stat statistics string stringprep struct subprocess symtable sys sysconfig tabnanny tarfile
tempfile textwrap threading time timeit token tokenize tomllib trace traceback tracemalloc
types typing unicodedata unittest unittest.mock urllib urllib.error urllib.parse urllib.request
urllib.robotparser uuid warnings wave weakref wsgiref wsgiref.simple_server xml xml.dom
xml.dom.minidom xml.etree.ElementTree xml.sax xmlrpc.client xmlrpc.server zipapp zipfile
zipimport zlib zoneinfo asyncio.base_events asyncio.events asyncio.futures asyncio.locks
asyncio.protocols asyncio.queues asyncio.streams asyncio.subprocess asyncio.tasks
asyncio.transports concurrent.futures.process concurrent.futures.thread ctypes.util dbm
email.charset email.contentmanager email.feedparser email.generator email.header
email.headerregistry email.mime.multipart email.mime.text importlib.machinery
multiprocessing.connection multiprocessing.context multiprocessing.managers multiprocessing.queues
multiprocessing.synchronize sqlite3.dbapi2 unittest.case unittest.loader unittest.result
unittest.runner unittest.suite urllib.response venv xml.dom.pulldom xml.etree.ElementPath
xml.sax.handler xml.sax.saxutils
""".split()


def _python_docs() -> Iterator[str]:
    """`pydoc_data` help topics, then docstrings of the modules above and their public API.

    One document per topic and per docstring (module, public class, public function, public
    method), deduplicated, in a fixed order: about 1.5 MB of English technical prose.
    """
    from pydoc_data.topics import topics

    seen: set[str] = set()
    for key in sorted(topics):
        yield from _unseen(topics[key], seen)
    for name in _PYTHON_DOCS_MODULES:
        try:
            with warnings.catch_warnings():  # e.g. typing.io's deprecation on attribute access
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
                docs = list(_module_docstrings(module))
        except ImportError:
            continue  # not built on this platform (e.g. readline-less builds)
        for doc in docs:
            yield from _unseen(doc, seen)


def _unseen(text: str | None, seen: set[str]) -> Iterator[str]:
    text = inspect.cleandoc(text) if text else ""
    if text.strip() and text not in seen:
        seen.add(text)
        yield text


def _module_docstrings(module: object) -> Iterator[str | None]:
    yield module.__doc__
    for attr in sorted(vars(module)):
        value = vars(module)[attr]
        if attr.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue  # private, or imported from elsewhere (documented there)
        if inspect.isclass(value):
            yield value.__doc__
            for method_name in sorted(vars(value)):
                method = vars(value)[method_name]
                if not method_name.startswith("_") and inspect.isroutine(method):
                    yield method.__doc__
        elif inspect.isfunction(value) or inspect.isbuiltin(value):
            yield value.__doc__
