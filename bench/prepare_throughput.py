"""`lmforge data prepare` throughput (MB/s) and peak memory, beside `datasets` + the same tokenizer.

    python bench/prepare_throughput.py [--size-mb 100] [--workers 2] [--work DIR] [--json]
                                       [--skip-reference]

Steps (everything lives in the work folder, default a fresh temp dir; an existing one is reused):

1. Corpus: `--size-mb` MB (10^6 bytes) of real English text from ../shared/data (gutenberg,
   brown, tinyshakespeare, us_speeches; decoded as UTF-8 with errors="replace"), written to
   WORK/corpus/part-NNN.txt files of about `--file-mb` MB. The sources are cut into paragraphs,
   normalized (newlines to \\n, trailing whitespace stripped, exactly one blank line between
   paragraphs, no trailing newline at the end of a file) so that our paragraph splitting and the
   `datasets` text builder's `sample_by="paragraph"` (a split on "\\n\\n") see the same documents.
   The ~20 MB of sources are repeated as often as needed; every paragraph of repetition k starts
   with "(k) ", so repetitions are distinct documents (they would otherwise all land in the same
   hash split, and the BPE word cache would see only repeats).
2. Tokenizer: byte-level BPE, vocab 8192, trained with `lmforge.data.tokenizer.train_tokenizer` on
   ~5 MB of the unprefixed sources (every k-th paragraph, so all sources are represented); saved
   to WORK/tokenizer and reused if present.
3. Ours: `lmforge data prepare --input FILES --tokenizer WORK/tokenizer --out WORK/out-lmforge
   --workers N --split-by paragraph --no-progress` in a subprocess (the output is deleted first, so
   nothing is reused).
4. Reference: a subprocess running `datasets.load_dataset("text", data_files=FILES,
   sample_by="paragraph", split="train", num_proc=N)` then `.map(batched=True, num_proc=N,
   remove_columns=["text"])` with `tokenizers.Tokenizer.from_file(WORK/tokenizer/tokenizer.json)
   .encode_batch(texts, add_special_tokens=False)`, in a fresh cache dir under WORK (deleted
   afterwards), offline. With N > 1, TOKENIZERS_PARALLELISM=false as in our workers (one process
   per core is the parallelism on both sides).

Measured for each subprocess: wall time from start to exit (imports included, on both sides);
peak memory of the whole process tree (the subprocess and all its descendants, e.g. the worker
pools), sampled every 50 ms from /proc: the sum of VmRSS (an upper bound: shared library pages are
counted once per process) and the sum of Pss from smaps_rollup (shared pages split between the
processes that share them); and the largest single process's peak RSS (ru_maxrss from wait4, exact,
not sampled). Token counts: ours from the manifest (one separator token after every document),
theirs summed from the ids column; they must agree once our separators are subtracted.
Also reported (summary lines, --json `inner_seconds`): each side's time without interpreter
start-up and imports: ours from its own "prepared ... in X s" log line (reading, tokenizing,
writing; the CLI imports torch first, ~2 s), theirs load_dataset + map.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CORPUS_VERSION = 1
TOKENIZER_MB = 5
VOCAB_SIZE = 8192
MB = 1_000_000


# --- corpus -------------------------------------------------------------------------------------


def source_files(root: Path) -> list[Path]:
    files = [
        *sorted(root.glob("gutenberg/*.txt")),
        root / "brown" / "brown_plain.txt",
        root / "tinyshakespeare" / "input.txt",
        *sorted(root.glob("us_speeches/*/*.txt")),
    ]
    return [f for f in files if f.is_file()]


def source_paragraphs(root: Path) -> list[str]:
    """Paragraphs of the sources: lines right-stripped, split at blank lines, joined with \\n."""
    if not root.is_dir():
        sys.exit(
            f"error: {root} not found; this benchmark builds its corpus from the English files of "
            "../shared/data (gutenberg, brown, tinyshakespeare, us_speeches) next to the repo"
        )
    files = source_files(root)
    if not files:
        sys.exit(f"error: no gutenberg/brown/tinyshakespeare/us_speeches text files in {root}")
    paragraphs: list[str] = []
    for file in files:
        text = file.read_bytes().decode("utf-8", errors="replace")
        lines: list[str] = []
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            line = line.rstrip()
            if line:
                lines.append(line)
            elif lines:
                paragraphs.append("\n".join(lines))
                lines = []
        if lines:
            paragraphs.append("\n".join(lines))
    return paragraphs


def build_corpus(work: Path, size_mb: float, file_mb: float) -> list[Path]:
    """WORK/corpus/part-NNN.txt with `size_mb` MB in total; reused when already built alike."""
    folder = work / "corpus"
    recipe = {"version": CORPUS_VERSION, "size_mb": size_mb, "file_mb": file_mb}
    meta_path = folder / "corpus.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        files = [folder / name for name in meta["files"]]
        if meta["recipe"] == recipe and all(f.is_file() for f in files):
            return files
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paragraphs = source_paragraphs(SHARED_DATA)
    target, per_file = int(size_mb * MB), int(file_mb * MB)
    files: list[Path] = []
    total = 0
    copy = 0
    out = None
    in_file = 0
    while total < target:
        for paragraph in paragraphs:
            if total >= target:
                break
            if out is None or in_file >= per_file:
                if out is not None:
                    out.close()
                files.append(folder / f"part-{len(files):03d}.txt")
                out = open(files[-1], "wb")  # noqa: SIM115 (closed on rollover and at the end)
                in_file = 0
            data = (("\n\n" if in_file else "") + f"({copy}) {paragraph}").encode("utf-8")
            out.write(data)
            in_file += len(data)
            total += len(data)
        copy += 1
    if out is not None:
        out.close()
    meta = {"recipe": recipe, "files": [f.name for f in files], "bytes": total, "copies": copy}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return files


def build_tokenizer(work: Path) -> Path:
    """WORK/tokenizer (byte-level BPE, 8192) trained on ~5 MB of the sources; reused if present."""
    folder = work / "tokenizer"
    if (folder / "tokenizer.json").is_file():
        return folder
    from lmforge.data.tokenizer import train_tokenizer

    paragraphs = source_paragraphs(SHARED_DATA)
    total = sum(len(p.encode("utf-8")) for p in paragraphs)
    stride = max(1, round(total / (TOKENIZER_MB * MB)))
    started = time.perf_counter()
    tokenizer = train_tokenizer("bpe", VOCAB_SIZE, paragraphs[::stride])
    tokenizer.save(folder)
    print(
        f"trained the tokenizer on every {stride}th paragraph of {total / MB:.1f} MB of sources "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return folder


# --- measuring a process tree -------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may hold spaces or parentheses: the fields after the last ')' are fixed.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _tree(root: int) -> list[int]:
    children = _children_map()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, ()))
    return pids


def _kb(path: str, field: str) -> int:
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(field.encode()):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory(threading.Thread):
    """Samples the process tree under `root` every `interval` s: peak sum of VmRSS and of Pss."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_rss_kb = self.peak_pss_kb = self.max_processes = self.samples = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            pids = _tree(self.root)
            rss = sum(_kb(f"/proc/{pid}/status", "VmRSS:") for pid in pids)
            pss = sum(_kb(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids)
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.peak_pss_kb = max(self.peak_pss_kb, pss)
            self.max_processes = max(self.max_processes, len(pids))
            self.samples += 1
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def measure(command: list[str], env: dict[str, str], log: Path) -> dict:
    """Run `command`, returning wall seconds, memory peaks and its stdout; exit on failure."""
    with open(log, "wb") as stderr, tempfile.TemporaryFile() as stdout:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, cwd=REPO)
        sampler = TreeMemory(process.pid)
        sampler.start()
        # wait4, not wait: its rusage holds the peak RSS of the child and its reaped descendants.
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        sampler.stop()
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        output = stdout.read().decode("utf-8", errors="replace")
    if process.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        sys.exit(f"error: {' '.join(command[:4])} ... failed ({process.returncode}):\n{tail}")
    return {
        "seconds": seconds,
        "peak_rss_mb": sampler.peak_rss_kb / 1024,
        "peak_pss_mb": sampler.peak_pss_kb / 1024,
        "max_single_process_rss_mb": usage.ru_maxrss / 1024,
        "max_processes": sampler.max_processes,
        "samples": sampler.samples,
        "stdout": output,
    }


# --- the two pipelines --------------------------------------------------------------------------


def base_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HOME=str(work / "hf-home"),
        HF_DATASETS_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    return env


def lmforge_command() -> list[str]:
    script = Path(sys.executable).parent / "lmforge"
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "lmforge.cli.main"]


def run_ours(files: list[Path], tokenizer: Path, work: Path, workers: int) -> dict:
    out = work / "out-lmforge"
    shutil.rmtree(out, ignore_errors=True)
    command = [
        *lmforge_command(),
        "data",
        "prepare",
        "--input",
        *map(str, files),
        "--tokenizer",
        str(tokenizer),
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--split-by",
        "paragraph",
        "--no-progress",
    ]
    result = measure(command, base_env(work), work / "lmforge.log")
    manifest = json.loads((out / "manifest.json").read_text())
    splits = manifest["splits"].values()
    result["documents"] = sum(s["num_documents"] for s in splits)
    result["tokens"] = sum(s["num_tokens"] for s in splits)
    result["tokens_without_separators"] = result["tokens"] - result["documents"]
    # Its own log line times reading + tokenizing + writing, without imports and worker start-up.
    found = re.search(r" in ([0-9.]+) s \(", (work / "lmforge.log").read_text(errors="replace"))
    result["inner_seconds"] = float(found.group(1)) if found else None
    del result["stdout"]
    return result


def run_reference(files: list[Path], tokenizer: Path, work: Path, workers: int) -> dict:
    cache = work / "hf-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = base_env(work)
    env["HF_DATASETS_CACHE"] = str(cache)
    if workers > 1:
        env["TOKENIZERS_PARALLELISM"] = "false"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_reference",
        "--tokenizer-json",
        str(tokenizer / "tokenizer.json"),
        "--cache-dir",
        str(cache),
        "--workers",
        str(workers),
        *map(str, files),
    ]
    result = measure(command, env, work / "reference.log")
    inner = json.loads(result.pop("stdout").strip().splitlines()[-1])
    shutil.rmtree(cache, ignore_errors=True)
    result.update(inner)
    result["tokens_without_separators"] = result["tokens"]
    result["inner_seconds"] = result["load_seconds"] + result["map_seconds"]
    return result


def reference_main(argv: list[str]) -> int:
    """The reference pipeline, run in its own process; prints one JSON line."""
    parser = argparse.ArgumentParser(prog="prepare_throughput.py _reference")
    parser.add_argument("--tokenizer-json", required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import datasets
    import pyarrow.compute as pc
    from tokenizers import Tokenizer

    datasets.disable_progress_bars()
    tokenizer = Tokenizer.from_file(args.tokenizer_json)
    num_proc = args.workers if args.workers > 1 else None
    imported = time.perf_counter()
    dataset = datasets.load_dataset(
        "text",
        data_files=args.files,
        sample_by="paragraph",
        split="train",
        cache_dir=args.cache_dir,
        num_proc=num_proc,
    )
    loaded = time.perf_counter()

    def encode(batch: dict) -> dict:
        encodings = tokenizer.encode_batch(batch["text"], add_special_tokens=False)
        return {"ids": [e.ids for e in encodings]}

    dataset = dataset.map(encode, batched=True, num_proc=num_proc, remove_columns=["text"])
    mapped = time.perf_counter()
    tokens = pc.sum(pc.list_value_length(dataset.data.column("ids"))).as_py()
    result = {
        "documents": len(dataset),
        "tokens": int(tokens or 0),
        "import_seconds": imported - started,
        "load_seconds": loaded - imported,
        "map_seconds": mapped - loaded,
    }
    print(json.dumps(result))
    return 0


# --- main ---------------------------------------------------------------------------------------


COLUMNS = ("pipeline", "workers", "MB", "seconds", "MB/s", "peak RSS MB", "peak PSS MB", "tokens")


def main(argv: list[str]) -> int:
    if argv[:1] == ["_reference"]:
        return reference_main(argv[1:])
    parser = argparse.ArgumentParser(
        description="`lmforge data prepare` throughput and peak memory on a corpus of real text, "
        "beside datasets.load_dataset('text') + .map with the same tokenizer.",
        epilog="Peak memory is of the whole process tree (parent + workers), sampled every 50 ms "
        "from /proc: the sum of VmRSS (shared pages counted per process) and the sum of Pss "
        "(shared pages divided); --json adds the largest single process's exact peak RSS.",
    )
    parser.add_argument("--size-mb", type=float, default=100, help="corpus size in MB (100)")
    parser.add_argument("--file-mb", type=float, default=10, help="size of each corpus file (10)")
    parser.add_argument("--workers", type=int, default=2, help="processes on both sides (2)")
    parser.add_argument("--work", type=Path, help="work folder, reused if present (default: temp)")
    parser.add_argument("--skip-reference", action="store_true", help="only run lmforge")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    if args.size_mb <= 0 or args.file_mb <= 0 or args.workers < 1:
        parser.error("--size-mb and --file-mb must be > 0 and --workers >= 1")
    temporary = args.work is None
    work = Path(tempfile.mkdtemp(prefix="prepare-bench-")) if temporary else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        files = build_corpus(work, args.size_mb, args.file_mb)
        megabytes = sum(f.stat().st_size for f in files) / MB
        tokenizer = build_tokenizer(work)
        rows = [("lmforge", run_ours(files, tokenizer, work, args.workers))]
        if not args.skip_reference:
            rows.append(("datasets.map", run_reference(files, tokenizer, work, args.workers)))
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    for name, result in rows:
        result.update(
            pipeline=name,
            workers=args.workers,
            mb=megabytes,
            files=len(files),
            mb_per_s=megabytes / result["seconds"],
        )
    if args.json:
        for _, result in rows:
            print(json.dumps(result, sort_keys=True))
        return 0
    print(
        f"corpus: {megabytes:.1f} MB in {len(files)} file(s) ({work}{', deleted' * temporary}); "
        f"tokenizer: byte-level BPE {VOCAB_SIZE}; peak memory of the process tree, sampled every "
        "50 ms (RSS: sum of VmRSS, shared pages counted per process; PSS: shared pages divided)"
    )
    table = [COLUMNS] + [
        (
            name,
            str(r["workers"]),
            f"{r['mb']:.1f}",
            f"{r['seconds']:.1f}",
            f"{r['mb_per_s']:.2f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['peak_pss_mb']:.0f}",
            f"{r['tokens']:,}",
        )
        for name, r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    ours = rows[0][1]
    inner = ours["inner_seconds"]
    print(
        f"lmforge: {ours['documents']:,} documents, {ours['tokens']:,} tokens = "
        f"{ours['tokens_without_separators']:,} + one separator per document"
        + (f" (its own timing, without start-up: {inner:.1f} s)" if inner else "")
    )
    if len(rows) > 1:
        ref = rows[1][1]
        difference = ours["tokens_without_separators"] - ref["tokens"]
        print(
            f"datasets.map: {ref['documents']:,} documents, {ref['tokens']:,} tokens "
            f"(import {ref['import_seconds']:.1f} s, load_dataset {ref['load_seconds']:.1f} s, "
            f"map {ref['map_seconds']:.1f} s); "
            + ("token counts agree" if difference == 0 else f"DIFFERENCE {difference:+,} tokens")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
