#!/usr/bin/env bash
# The offline recipe: synthesise a corpus with espeak-ng -> train the tiny model on CPU -> evaluate streaming.
# Produces the bundled default model. Usage: recipes/synthetic/run.sh [--stage N] [--stop-stage M]
#   stage 0: synthesise data/synthetic (LibriSpeech layout; ~11 h of audio, ~3 min on 2 cores)
#   stage 1: prepare: BPE tokenizer + log-mel statistics -> exp/synthetic/prep
#   stage 2: train (conf/tiny_synthetic.yaml: 1600 steps, 1-1.5 h on 2 CPU cores; resumes from the last checkpoint)
#   stage 3: evaluate the streaming session (group mode, chunk 320 ms) at k = 1, 3, 5 on test and test-unseen-voice
#   stage 4: bundle the model into the package (float16, asr_stream/assets/default_model) and regenerate the sample
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=0
stop_stage=4
data=data/synthetic
exp=exp/synthetic
py=${PYTHON:-.venv/bin/python}
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "== stage 0: synthesise $data"
  $py tools/synth_corpus.py "$data" --seed 0 --top-words 3000 --max-words 16 --num-dev 200 --num-test 300 \
    --train-voices-per-sentence 3 --jobs 2
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "== stage 1: prepare tokenizer and feature statistics"
  $py -c "from asr_stream.training.prepare import prepare; prepare(['librispeech:$data:train'], '$exp/prep', vocab_size=300)"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "== stage 2: train"
  resume=()
  if [ -f "$exp/ckpt/last.ckpt" ]; then resume=(--ckpt_path "$exp/ckpt/last.ckpt"); fi
  $py -m asr_stream.training fit --config conf/tiny_synthetic.yaml "${resume[@]}"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  echo "== stage 3: evaluate streaming (group, 320 ms chunks)"
  for split in test test-unseen-voice; do
    for k in 1 3 5; do
      $py -m asr_stream eval --model "$exp/model" --data "librispeech:$data:$split" --mode group --k $k --phi 0 \
        --output "$exp/eval/$split-k$k"
    done
  done
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  echo "== stage 4: bundle the default model"
  $py tools/bundle_model.py "$exp/model" asr_stream/assets/default_model
  $py tools/make_sample.py asr_stream/assets/sample.wav
fi
