#!/usr/bin/env bash
# The GPU measurements of issue 15 in one command: bf16 matmul peak, MFU and tokens/s of
# gpt2-small, bert-base, t5-base and bart-base (compiled, beside transformers), and a 10-minute
# gpt2-small pretraining run on ../shared/data with its loss curve -> OUT/gpu.json and OUT/gpu.md.
# Without a CUDA GPU it runs a loud dry mode on tiny shapes. Options: see bench/gpu.py --help.
#
#   bench/gpu.sh                         # runs/gpu-bench/
#   bench/gpu.sh --out runs/h100 --minutes 10
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec python bench/gpu.py "$@"
