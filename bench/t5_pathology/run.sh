#!/usr/bin/env bash
# The T5 pathology of issue 12 at a tenth of docs/results.md's scale: Multi30k en-de on its first
# 3,000 training pairs (3 epochs, batch 32, no dropout, greedy decoding, BLEU on the first 200
# validation pairs), from pretrained t5-tiny checkpoints and from random initialisation.
#   bash bench/t5_pathology/run.sh [OUT]      (default runs/t5diag; needs runs/downstream/t5-data)
# Pretraining: bench/downstream/pretrain.sh's T5 recipe (spans target), and the same with
# --objective.span_target=full, each stopped after its step-1000 checkpoint (SIGTERM: the run saves
# and stops). Then encoder_use.py probes what the decoders read.
set -euo pipefail
OUT=${1:-runs/t5diag}
DATA=${SHARED_DATA:-../shared/data}
T5DATA=runs/downstream/t5-data
mkdir -p "$OUT"

pretrain_to_1000() {  # name [overrides...]
  local dir=$OUT/pt-$1; shift
  [[ -f $dir/checkpoints/step-0001000/trainer_state.json ]] && return
  lmforge pretrain t5-tiny --data.path="$T5DATA" --run.dir="$dir" --train.max_steps=7000 \
    --train.batch_size=8 --train.seq_len=256 --train.lr=1e-3 --train.warmup_steps=300 \
    --train.precision=bf16 --model.dropout=0 --eval.every=1000 --eval.max_batches=20 \
    --checkpoint.every=500 --log.progress=false "$@" &
  local pid=$!
  until [[ -f $dir/checkpoints/step-0001000/trainer_state.json ]]; do
    sleep 5; kill -0 $pid 2>/dev/null || break
  done
  kill -TERM $pid 2>/dev/null || true; wait $pid || true
}

finetune() {  # name checkpoint init lr
  local dir=$OUT/$1
  [[ -f $dir/metrics.json ]] && return
  rm -rf "$dir"
  lmforge finetune seq2seq "$2" --run.dir="$dir" --train.init="$3" --train.lr="$4" \
    --train.dropout=0 --data.train="$DATA/multi30k/train" --data.validation="$DATA/multi30k/val" \
    --task.source_lang=en --task.target_lang=de --task.kind=translation \
    --task.prefix="translate English to German: " --task.max_source_length=64 \
    --task.max_target_length=64 --task.num_beams=1 --train.epochs=3 --train.batch_size=32 \
    --data.max_train_examples=3000 --data.max_eval_examples=200 --eval.batch_size=100 \
    --log.progress=false --log.tensorboard=false --log.every=20
}

pretrain_to_1000 spans
pretrain_to_1000 full --objective.span_target=full
pretrain_to_1000 short64 --train.seq_len=64 --train.batch_size=32  # same tokens per step
SPANS=$OUT/pt-spans/checkpoints/step-0001000
FULL=$OUT/pt-full/checkpoints/step-0001000
SHORT=$OUT/pt-short64/checkpoints/step-0001000
for lr in 3e-4 1e-3; do
  finetune "random-$lr" "$SPANS" random "$lr"
  finetune "spans1000-$lr" "$SPANS" pretrained "$lr"
done
finetune "full1000-1e-3" "$FULL" pretrained 1e-3
finetune "short1000-1e-3" "$SHORT" pretrained 1e-3
python bench/t5_pathology/encoder_use.py "$SPANS" --data "$T5DATA"
python bench/t5_pathology/encoder_use.py "$FULL" --data "$T5DATA" --full
python bench/t5_pathology/encoder_use.py "$SHORT" --data "$T5DATA" --seq-len 64 --rows 64
for run in "$OUT"/*/metrics.json; do
  python -c "import json,sys; r=json.load(open(sys.argv[1])); v=r['validation']; print(sys.argv[1], 'BLEU %.2f loss %.2f' % (v['bleu'], v['loss']))" "$run"
done
