#!/usr/bin/env bash
# Pretrain the six models behind docs/results.md on the shared English corpora (gutenberg
# without the King James Bible, brown, us_speeches, tinyshakespeare: about 16 MB of prose).
# Usage: bash bench/downstream/pretrain.sh [bert] [roberta] [gpt2] [bloom] [t5] [bart] [OUT]
# (default: all six into runs/downstream). Step budgets fill about 28 minutes of training per
# model on an idle 2-core machine (measured throughput of each recipe, docs/results.md), plus
# tokenizer training and data preparation; the models run one after the other, never in parallel.
# Resumable: a finished tokenizer, data folder or run is skipped, and an interrupted run resumes
# from its last checkpoint (`lmforge pretrain` does, given the same run folder).
# Env: SHARED_DATA (default ../shared/data); PRETRAIN_EXTRA (overrides appended to every run,
# e.g. "--train.max_steps=100000" on a GPU); SMOKE=1 (a 100 KB corpus, 512-token vocabularies,
# width-32 models and 4 steps: checks the whole pipeline in seconds, numbers meaningless).
set -euo pipefail
OUT=runs/downstream
MODELS=()
for arg in "$@"; do
  case $arg in bert|roberta|gpt2|bloom|t5|bart) MODELS+=("$arg") ;; *) OUT=$arg ;; esac
done
[[ ${#MODELS[@]} -gt 0 ]] || MODELS=(bert roberta gpt2 bloom t5 bart)
DATA=${SHARED_DATA:-../shared/data}
mkdir -p "$OUT"
read -r -a EXTRA <<< "${PRETRAIN_EXTRA:-}"
VOCAB=8192 VAL_FRACTION=0.01
SMOKE_ARGS=()
if [[ -n ${SMOKE:-} ]]; then
  head -c 100000 "$DATA/tinyshakespeare/input.txt" > "$OUT/smoke-corpus.txt"
  CORPUS=("$OUT/smoke-corpus.txt")
  GERMAN=$OUT/smoke-german.txt  # the T5/BART vocabularies' German, cut down the same way
  head -n 300 "$DATA/multi30k/train.de" > "$GERMAN"
  VOCAB=512 VAL_FRACTION=0.1
  SMOKE_ARGS=(--train.batch_size=4 --train.seq_len=64 --train.warmup_steps=1
    --eval.every=2 --eval.max_batches=2 --checkpoint.every=2 --model.d_model=32
    --model.num_heads=2 --model.num_layers=2 --model.d_ff=64 --train.precision=fp32)
else
  CORPUS=()
  for f in "$DATA"/gutenberg/*.txt; do
    [[ $f == *bible-kjv* ]] || CORPUS+=("$f")
  done
  CORPUS+=("$DATA/brown/brown_plain.txt" "$DATA/us_speeches" "$DATA/tinyshakespeare/input.txt")
  GERMAN=$DATA/multi30k/train.de
fi

prepare() {  # kind name extra-tokenizer-inputs...
  local kind=$1 name=$2; shift 2
  [[ -f $OUT/$name-tokenizer/tokenizer.json ]] || lmforge tokenizer train --kind "$kind" \
    --vocab-size "$VOCAB" --input "${CORPUS[@]}" "$@" --out "$OUT/$name-tokenizer" --no-progress
  [[ -f $OUT/$name-data/manifest.json ]] || lmforge data prepare --input "${CORPUS[@]}" \
    --tokenizer "$OUT/$name-tokenizer" --out "$OUT/$name-data" --split-by paragraph \
    --val-fraction "$VAL_FRACTION" --no-progress
}

pretrain() {  # name data preset steps lr [overrides...]
  local name=$1 data=$2 preset=$3 steps=$4 lr=$5; shift 5
  [[ -n ${SMOKE:-} ]] && steps=4
  # The checkpoint of the last step marks a finished run (one is always written there).
  [[ -d $OUT/$name/checkpoints/step-$(printf %07d "$steps") ]] && return
  lmforge pretrain "$preset" --data.path="$OUT/$data-data" --run.dir="$OUT/$name" \
    --train.max_steps="$steps" --train.batch_size=8 --train.seq_len=256 --train.lr="$lr" \
    --train.warmup_steps=300 --train.precision=bf16 --model.dropout=0 \
    --eval.every=1000 --eval.max_batches=20 --checkpoint.every=1000 --log.progress=false \
    "$@" "${EXTRA[@]}" "${SMOKE_ARGS[@]}"
}

# Step budgets, from the runs of docs/results.md (2026-12-01, idle 2-core AMD EPYC, bf16):
# bert-tiny 32 x 128 at 305 steps/min (9,000 in 29.5 min), gpt2-tiny 8 x 256 at 407 steps/min
# (11,000 in 27.0), t5-tiny 8 x 256 at 263 steps/min (7,000 in 26.6). The new three share a
# measured model's shapes (4 layers, or 4 + 4, of width 256, vocabulary 8,192) and are
# estimated from it, to be checked against their first 1,000 steps (metrics.jsonl elapsed_s):
# roberta-tiny = bert-tiny's arithmetic (learned positions, post/pre-norm LayerNorm: same FLOPs).
# bloom-tiny and bart-tiny were timed against gpt2-tiny and t5-tiny in one process, interleaved
# (forward + backward, bf16, 8 x 256, vocabulary 8,192; 2026-12-02 on a machine shared with other
# jobs, so ratios only, best of 4): bloom-tiny 2.5 s per step vs gpt2-tiny 1.9 s (ALiBi adds a
# bias to every score matrix, which leaves the fused causal attention path), bart-tiny 4.3 s
# (a 256-token decoder target) vs t5-tiny 4.2 s.
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
      pretrain bert bert bert-tiny 9000 1e-3 --train.batch_size=32 --train.seq_len=128 \
        --objective.mask_rate=0.3 --model.norm.placement=pre
      ;;
    # RoBERTa: BERT's recipe with RoBERTa's differences: a byte-level BPE vocabulary (GPT-2's,
    # trained on the same corpus: the gpt2 tokenizer and data are shared), no next-sentence task,
    # masks drawn afresh for every batch (dynamic masking: the masked-LM objective masks at batch
    # time, never in the prepared data). Pre-norm and 30% masking for the reasons of BERT's above:
    # roberta-tiny has the same post-norm blocks that plateaued. 8,500 steps: 28 minutes at
    # bert-tiny's 305 steps/min.
    roberta)
      prepare bpe gpt2
      pretrain roberta gpt2 roberta-tiny 8500 1e-3 --train.batch_size=32 --train.seq_len=128 \
        --objective.mask_rate=0.3 --model.norm.placement=pre
      ;;
    gpt2)
      prepare bpe gpt2
      pretrain gpt2 gpt2 gpt2-tiny 11000 2e-3
      ;;
    # BLOOM: GPT-2's recipe (causal LM, the same BPE tokenizer and data) on bloom-tiny (ALiBi
    # instead of learned positions, a LayerNorm after the embedding). 8,500 steps: 27 minutes at
    # an estimated 310 steps/min (gpt2-tiny's 407 / 1.3, the ratio above).
    bloom)
      prepare bpe gpt2
      pretrain bloom gpt2 bloom-tiny 8500 2e-3
      ;;
    t5)
      # T5's own vocabulary also covers the languages of its translation tasks (Raffel et al.
      # 2020, section 2.2); ours sees the Multi30k German training captions so that en->de has
      # German pieces. The pretraining text stays English. 7,000 steps: the first run's 8,500 took
      # 33 minutes, not the 28 they were measured at, and it was fine-tuned from its step 7,000
      # (26.6 minutes); now the schedule ends there.
      prepare unigram t5 "$GERMAN"
      pretrain t5 t5 t5-tiny 7000 1e-3 --objective.kind=span_corruption
      ;;
    # BART: a byte-level BPE vocabulary that, as T5's, also saw the Multi30k German captions (its
    # own tokenizer, not GPT-2's), and the bart preset's own objective (text infilling, Poisson(3)
    # spans at 30%, plus sentence permutation: Lewis et al. 2020). 7,000 steps: 27 minutes at
    # t5-tiny's 263 steps/min (the ratio above is 1.0), the T5 run's own overshoot in mind. bart-tiny keeps BART's
    # post-norm blocks; should its first evaluations sit on the unigram plateau as BERT's did,
    # rerun with PRETRAIN_EXTRA=--model.norm.placement=pre (a fresh OUT/bart).
    bart)
      prepare bpe bart "$GERMAN"
      pretrain bart bart bart-tiny 7000 1e-3
      ;;
  esac
done
