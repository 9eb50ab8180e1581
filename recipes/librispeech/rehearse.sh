#!/usr/bin/env bash
# Rehearse the LibriSpeech recipe on CPU with the tiny twin of conf/phi3_librispeech.yaml, from the manifest
# stage to the end, in a few minutes and without a network:
#   1. a LibriSpeech-layout corpus written here by tools/corpus/synth_corpus.py (espeak-ng; splits train, dev, test,
#      test-unseen-voice) stands in for the download (run.sh stage 0, skipped: it needs a network);
#   2. tools/model/make_tiny_twin.py writes a random tiny HuBERT and a random tiny Phi3ForCausalLM (bfloat16) with a
#      word-start tokenizer trained on the corpus transcripts, as from_pretrained reads a hub download;
#   3. recipes/librispeech/run.sh --stage 1 with conf/phi3_librispeech_tiny.yaml: manifests -> train one model
#      per φ in {0, 256} -> export -> eval -> k sweeps, φ table, and the inference-only φ sweep.
# Usage: recipes/librispeech/rehearse.sh [--work DIR]    (default exp/librispeech-tiny; DIR is replaced)
# Random weights and ~3 minutes of training audio: the WER it prints is ~100 %; the rehearsal proves the path runs.
set -euo pipefail
cd "$(dirname "$0")/../.."

work=exp/librispeech-tiny
py=${PYTHON:-.venv/bin/python}
while [ $# -gt 0 ]; do
  case "$1" in
    --work) work=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$work"
work=$(cd "$work" && pwd)  # absolute: model directories record the twin's paths
export PYTHON=$py

echo "== rehearsal: synthesise a LibriSpeech-layout corpus in $work/data (stands in for the download)"
$py tools/corpus/synth_corpus.py "$work/data" --seed 0 --num-train 80 --num-dev 8 --num-test 8 --top-words 500 \
  --min-train-vocab 50 --max-words 10 --jobs 2 --overwrite --quiet
echo "== rehearsal: tiny twin of HuBERT + Phi-3 in $work/twin"
rm -rf "$work/twin"
$py tools/model/make_tiny_twin.py "$work/twin" --text "librispeech:$work/data:train"
echo "== rehearsal: recipes/librispeech/run.sh from stage 1"
recipes/librispeech/run.sh --stage 1 --config conf/phi3_librispeech_tiny.yaml --data "$work/data" --exp "$work/exp" \
  --train-splits train --val-splits dev --test-splits "test test-unseen-voice" --phis "0 256" --infer-phis "0 256" \
  --ks "1 3" --eval-k 3 --device cpu \
  --set "model.model.encoder.hf_name_or_path=$work/twin/hubert" --set "model.model.decoder.name_or_path=$work/twin/phi3"
