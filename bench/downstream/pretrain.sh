#!/usr/bin/env bash
# Pretrain the three models behind docs/results.md on the shared English corpora (gutenberg
# without the King James Bible, brown, us_speeches, tinyshakespeare: about 16 MB of prose).
# Usage: bash bench/downstream/pretrain.sh [bert] [gpt2] [t5] [OUT]   (default: all three into
# runs/downstream). Step budgets fill about 28 minutes of training per model on an idle 2-core
# machine (measured throughput of each recipe, docs/results.md), plus tokenizer training and data
# preparation; run the models one after the other, not in parallel.
set -euo pipefail
OUT=runs/downstream
MODELS=()
for arg in "$@"; do
  case $arg in bert|gpt2|t5) MODELS+=("$arg") ;; *) OUT=$arg ;; esac
done
[[ ${#MODELS[@]} -gt 0 ]] || MODELS=(bert gpt2 t5)
DATA=${SHARED_DATA:-../shared/data}
mkdir -p "$OUT"
CORPUS=()
for f in "$DATA"/gutenberg/*.txt; do
  [[ $f == *bible-kjv* ]] || CORPUS+=("$f")
done
CORPUS+=("$DATA/brown/brown_plain.txt" "$DATA/us_speeches" "$DATA/tinyshakespeare/input.txt")

prepare() {  # kind name extra-tokenizer-inputs...
  local kind=$1 name=$2; shift 2
  [[ -f $OUT/$name-tokenizer/tokenizer.json ]] || lmforge tokenizer train --kind "$kind" \
    --vocab-size 8192 --input "${CORPUS[@]}" "$@" --out "$OUT/$name-tokenizer" --no-progress
  [[ -f $OUT/$name-data/manifest.json ]] || lmforge data prepare --input "${CORPUS[@]}" \
    --tokenizer "$OUT/$name-tokenizer" --out "$OUT/$name-data" --split-by paragraph \
    --val-fraction 0.01 --no-progress
}

pretrain() {  # name preset steps lr [overrides...]
  local name=$1 preset=$2 steps=$3 lr=$4; shift 4
  lmforge pretrain "$preset" --data.path="$OUT/$name-data" --run.dir="$OUT/$name" \
    --train.max_steps="$steps" --train.batch_size=8 --train.seq_len=256 --train.lr="$lr" \
    --train.warmup_steps=300 --train.precision=bf16 --model.dropout=0 \
    --eval.every=1000 --eval.max_batches=20 --checkpoint.every=1000 --log.progress=false "$@"
}

for model in "${MODELS[@]}"; do
  case $model in
    # MLM learns from the masked positions only: a 2x larger batch of shorter windows and a 30%
    # masking rate (Wettig et al. 2023) give it ~4x the targets per step of 8 x 256 at 15%. Blocks
    # are pre-norm (as in Cramming, Geiping & Goldstein 2023): BERT's post-norm stack sat on the
    # unigram plateau here (val loss 6.2-6.4, masked accuracy 0.12-0.14) for 2,000 steps at
    # 8 x 256 / 1e-3 and for 900 steps at 32 x 128 / 5e-4 / 30%.
    # A cased WordPiece vocabulary (bert-base-cased): capitals are what NER leans on most.
    bert)
      prepare wordpiece bert --cased
      pretrain bert bert-tiny 9000 1e-3 --train.batch_size=32 --train.seq_len=128 \
        --objective.mask_rate=0.3 --model.norm.placement=pre
      ;;
    gpt2)
      prepare bpe gpt2
      pretrain gpt2 gpt2-tiny 11000 2e-3
      ;;
    t5)
      # T5's own vocabulary also covers the languages of its translation tasks (Raffel et al.
      # 2020, section 2.2); ours sees the Multi30k German training captions so that en->de has
      # German pieces. The pretraining text stays English. 8,500 steps took 33 minutes in the run of
      # docs/results.md, not the 28 they were measured at: finetune.sh starts from step 7,000.
      prepare unigram t5 "$DATA/multi30k/train.de"
      pretrain t5 t5-tiny 8500 1e-3 --objective.kind=span_corruption
      ;;
  esac
done
