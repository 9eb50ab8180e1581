#!/usr/bin/env bash
# LibriSpeech recipe: download -> prepare -> train (Phi-3-mini + HuBERT, LoRA, multi-GPU) -> sweep k x phi.
# Usage: recipes/librispeech/run.sh [--stage N] [--stop-stage M] [--data DIR] [--exp DIR] [--config YAML]
#   stage 0: download and unpack LibriSpeech from openslr.org (resource 12) into $data (needs a network)
#   stage 1: check the layout and write JSONL manifests (utterance counts and hours per split)
#   stage 2: train with LightningCLI (conf/phi3_librispeech.yaml); resumes from $exp/ckpt/last.ckpt
#            multi-node: run this stage under torchrun/SLURM with trainer.num_nodes set in the config
#   stage 3: streaming sweep over k and phi on test-clean and test-other (tables + plots in $exp/sweep-*)
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=0
stop_stage=3
data=data/LibriSpeech
exp=exp/librispeech
config=conf/phi3_librispeech.yaml
py=${PYTHON:-.venv/bin/python}
parts="train-clean-100 train-clean-360 train-other-500 dev-clean dev-other test-clean test-other"
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "== stage 0: download LibriSpeech to $data"
  mkdir -p "$(dirname "$data")"
  for part in $parts; do
    if [ -d "$data/$part" ]; then echo "$part: present"; continue; fi
    url="https://www.openslr.org/resources/12/$part.tar.gz"
    echo "$part: fetching $url"
    curl -fL --retry 3 "$url" | tar -xz -C "$(dirname "$data")"
  done
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "== stage 1: prepare manifests in $exp/manifests"
  mkdir -p "$exp/manifests"
  for part in $parts; do
    [ -d "$data/$part" ] || { echo "$part: missing, skipped"; continue; }
    $py -c "
from asr_stream.data import read_librispeech, write_manifest
u = read_librispeech('$data', '$part')
write_manifest(u, '$exp/manifests/$part.jsonl')
print('$part: %d utterances, %.1f h' % (len(u), sum(x.duration for x in u) / 3600))"
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "== stage 2: train ($config)"
  resume=()
  if [ -f "$exp/ckpt/last.ckpt" ]; then resume=(--ckpt_path "$exp/ckpt/last.ckpt"); fi
  $py -m asr_stream.training fit --config "$config" \
    --data.train "[librispeech:$data:train-960]" --data.val "[librispeech:$data:dev-clean]" "${resume[@]}"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  echo "== stage 3: streaming sweeps"
  for part in test-clean test-other; do
    $py -m asr_stream sweep --data "librispeech:$data:$part" --model "$exp/model" --modes group \
      --ks 1 3 5 7 --phis 0 256 512 --output "$exp/sweep-$part"
  done
fi
