"""Conversion time and peak memory: `lmforge convert --from-hf` and `--to-hf` on full-size shapes.

Builds a random `transformers` model of the GPT-2 small shape (124 M) and of the T5 v1.1 small shape
(77 M: google/t5-v1_1-small's config, 6 heads of 64, gated GELU, untied head), saves each with
`save_pretrained` (safetensors), then times each direction in a fresh process and reads that
process' peak RSS (`ru_maxrss` from `wait4`).

    python bench/convert_benchmark.py [--work DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def hf_models() -> dict:
    import transformers

    return {
        "gpt2-small": transformers.GPT2LMHeadModel(transformers.GPT2Config()),
        "t5-v1_1-small": transformers.T5ForConditionalGeneration(
            transformers.T5Config(
                vocab_size=32128,
                d_model=512,
                d_kv=64,
                d_ff=1024,
                num_layers=8,
                num_heads=6,
                feed_forward_proj="gated-gelu",
                tie_word_embeddings=False,
            )  # fmt: skip
        ),
    }


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", help="folder for the models (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="convert-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    lmforge = [sys.executable, "-m", "lmforge", "convert"]
    baseline_s, baseline_mb = timed([sys.executable, "-c", "import lmforge.cli.main, torch"])
    if not args.json:
        print(
            f"start-up of python + torch + lmforge alone: {baseline_s:.1f} s, {baseline_mb:.0f} MB"
        )
        print(f"{'model':12} {'parameters':>11} {'direction':9} {'seconds':>8} {'peak RSS MB':>12}")
    for name, model in hf_models().items():
        hf_dir, ours, back = work / f"{name}-hf", work / f"{name}-lmforge", work / f"{name}-back"
        for folder in (hf_dir, ours, back):
            shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(hf_dir)
        parameters = sum(p.numel() for p in model.parameters())  # shared tensors counted once
        for direction, command in (
            ("from-hf", [*lmforge, "--from-hf", str(hf_dir), str(ours)]),
            ("to-hf", [*lmforge, "--to-hf", str(ours), str(back)]),
        ):
            seconds, peak_mb = timed(command)
            row = {"model": name, "parameters": parameters, "direction": direction,
                   "seconds": seconds, "peak_rss_mb": peak_mb}  # fmt: skip
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{name:12} {parameters:>11,} {direction:9} {seconds:>8.1f} {peak_mb:>12.0f}")
    if not args.work:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
