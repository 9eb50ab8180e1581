#!/usr/bin/env bash
# The offline recipe: synthesise a corpus with espeak-ng -> train the tiny model on CPU -> evaluate streaming.
# Produces the bundled default model. Usage: recipes/synthetic/run.sh [--stage N] [--stop-stage M]
#   stage 0: synthesise data/synthetic (LibriSpeech layout + word alignments; ~29 h of audio, ~6 min on 2 cores)
#   stage 1: prepare: BPE tokenizer + log-mel statistics -> exp/synthetic/prep
#   stage 2: train (conf/tiny_synthetic.yaml: 4657 steps, 75 min on 2 CPU cores on 2026-12-01; resumes from the last checkpoint)
#   stage 3: evaluate the streaming session (group mode, chunk 320 ms) at k = 1, 3, 5 on test and test-unseen-voice
#   stage 4: bundle the model into the package (float16, asr_stream/assets/default_model) and regenerate the sample
#   stage 5: the paper's ablation in miniature: fine-tune the group model for 300 steps in each variant
#            (group, interleaved, batch; group with phi = 0.5, 64, 256), conf/ablation_synthetic.yaml (~6 min each)
#   stage 6: sweep the variants on the first $ablation_utts test utterances -> exp/synthetic/ablation/sweep-*
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=0
stop_stage=4
data=data/synthetic
exp=exp/synthetic
py=${PYTHON:-.venv/bin/python}
ablation_utts=150
variants="group:group:0.0 interleaved:interleaved:0.0 batch:batch:0.0 group-phi0.5:group:0.5 group-phi64:group:64.0 group-phi256:group:256.0"
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
    --train-voices-per-sentence 3 --extra-train-voices 2 --jobs 2
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

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  echo "== stage 5: ablation fine-tunes from $exp/model"
  for v in $variants; do
    IFS=: read -r name mode phi <<< "$v"
    d=$exp/ablation/$name
    if [ -f "$d/done" ]; then echo "$name: already fine-tuned"; continue; fi
    mkdir -p "$d"
    sed "s#@NAME@#$name#g; s#@MODE@#$mode#g; s#@PHI@#$phi#g" conf/ablation_synthetic.yaml > "$d/config.yaml"
    resume=()
    if [ -f "$d/ckpt/last.ckpt" ]; then resume=(--ckpt_path "$d/ckpt/last.ckpt"); fi
    $py -m asr_stream.training fit --config "$d/config.yaml" "${resume[@]}"
    touch "$d/done"
  done
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  echo "== stage 6: ablation sweeps on the first $ablation_utts test utterances"
  a=$exp/ablation
  test_set="librispeech:$data:test"
  # modes, each with the model fine-tuned in its own layout (batch-position / batch-kv use the batch model)
  $py -m asr_stream sweep --data "$test_set" --limit $ablation_utts --output "$a/sweep-modes" \
    --model "$a/group/model" --modes group interleaved batch batch-position batch-kv --ks 1 3 5 \
    --mode-models "{\"interleaved\": \"$a/interleaved/model\", \"batch\": \"$a/batch/model\"}"
  # phi: a model fine-tuned at each phi, evaluated at its own phi
  for phi in 0.5 64 256; do
    $py -m asr_stream sweep --data "$test_set" --limit $ablation_utts --output "$a/sweep-phi$phi" \
      --model "$a/group-phi$phi/model" --modes group --ks 1 3 5 --phis $phi
  done
  # phi changed at inference only: the phi = 0 model evaluated at other offsets
  $py -m asr_stream sweep --data "$test_set" --limit $ablation_utts --output "$a/sweep-phi-inference" \
    --model "$a/group/model" --modes group --ks 3 --phis 0 0.5 64 256
fi
