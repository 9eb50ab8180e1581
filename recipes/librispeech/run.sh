#!/usr/bin/env bash
# LibriSpeech recipe: download -> prepare -> train (Phi-3-mini + HuBERT, LoRA, multi-GPU) -> export -> eval -> sweep.
# Usage: recipes/librispeech/run.sh [--stage N] [--stop-stage M] [--config YAML] [--data DIR] [--exp DIR]
#          [--train-splits "A B"] [--val-splits "A"] [--test-splits "A B"] [--phis "0 256 512"] [--infer-phis "..."]
#          [--ks "1 3 5 7"] [--eval-k K] [--limit N] [--device cuda|cpu] [--export-weights live|average]
#          [--set KEY=VALUE]...
#   stage 0: download and unpack LibriSpeech from openslr.org (resource 12) into $data (needs a network)
#   stage 1: check the layout and write JSONL manifests of every split used ($exp/manifests/<split>.jsonl)
#   stage 2: train one model per training φ in --phis (the paper's φ table trains one model per φ), each in
#            its own run folder $exp/phi<φ>/ (config.yaml, logs/, ckpt/, model/); resumes from its ckpt/last.ckpt.
#            The run's config is $config with its paths moved under the run (tools/training/run_config.py) and --set applied.
#            Multi-node: run this stage under torchrun/SLURM with trainer.num_nodes set in the config.
#   stage 3: export each run's last checkpoint to $exp/phi<φ>/export with `asr-stream export` (weights-only read;
#            --export-weights live, as the config keeps no weight average) -- the model the next stages use
#   stage 4: evaluate each model at k = --eval-k and at its own training φ on every test split
#            ($exp/phi<φ>/eval-<split>-k<K>: records.jsonl + summary.json)
#   stage 5: sweeps on every test split: each model over --ks at its own training φ ($exp/phi<φ>/sweep-<split>),
#            and the φ table across the trained models ($exp/phi-table-<split>.md: one model per φ, each at its
#            own φ). With --infer-phis, also the FIRST model of --phis over those φ at inference only
#            ($exp/sweep-<split>-inference-phi): that table varies only the inference φ of one model trained at
#            one φ; it is NOT the paper's φ table (a model streamed at a φ it was not trained at loses accuracy).
# Default: one model at φ = 0 (three 60k-step Phi-3 runs for the φ table are --phis "0 256 512").
# The tiny twin (random tiny HuBERT + Phi-3 of the same structure, on CPU): recipes/librispeech/rehearse.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=0
stop_stage=5
data=data/LibriSpeech
exp=exp/librispeech
config=conf/phi3_librispeech.yaml
py=${PYTHON:-.venv/bin/python}
train_splits="train-clean-100 train-clean-360 train-other-500"
val_splits="dev-clean"
test_splits="test-clean test-other"
phis="0"
infer_phis=""
ks="1 3 5 7"
eval_k=3
limit=()
device=cuda  # where eval and sweep run the model (training devices come from the config)
export_weights=live
sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --train-splits) train_splits=$2; shift 2 ;;
    --val-splits) val_splits=$2; shift 2 ;;
    --test-splits) test_splits=$2; shift 2 ;;
    --phis) phis=$2; shift 2 ;;
    --infer-phis) infer_phis=$2; shift 2 ;;
    --ks) ks=$2; shift 2 ;;
    --eval-k) eval_k=$2; shift 2 ;;
    --limit) limit=(--limit "$2"); shift 2 ;;
    --device) device=$2; shift 2 ;;
    --export-weights) export_weights=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -n "$phis" ] || { echo "--phis needs at least one value" >&2; exit 2; }
man=$exp/manifests
manifests() { for s in "$@"; do echo "$man/$s.jsonl"; done; }

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "== stage 0: download LibriSpeech to $data"
  mkdir -p "$(dirname "$data")"
  for part in $train_splits $val_splits $test_splits; do
    if [ -d "$data/$part" ]; then echo "$part: present"; continue; fi
    url="https://www.openslr.org/resources/12/$part.tar.gz"
    echo "$part: fetching $url"
    curl -fL --retry 3 "$url" | tar -xz -C "$(dirname "$data")"
  done
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "== stage 1: prepare manifests in $man"
  mkdir -p "$man"
  for part in $train_splits $val_splits $test_splits; do
    [ -d "$data/$part" ] || { echo "$part: missing in $data" >&2; exit 1; }
    $py -c "
from asr_stream.data import read_librispeech, write_manifest
u = read_librispeech('$data', '$part')
write_manifest(u, '$man/$part.jsonl')
print('$part: %d utterances, %.2f h' % (len(u), sum(x.duration for x in u) / 3600))"
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  for phi in $phis; do
    run=$exp/phi$phi
    echo "== stage 2: train $run (training φ = $phi, $config)"
    # shellcheck disable=SC2046
    $py tools/training/run_config.py "$config" "$run/config.yaml" --run "$run" --phi "$phi" \
      --train $(manifests $train_splits) --val $(manifests $val_splits) "${sets[@]}"
    resume=()
    if [ -f "$run/ckpt/last.ckpt" ]; then resume=(--ckpt_path "$run/ckpt/last.ckpt"); fi
    $py -m asr_stream train fit --config "$run/config.yaml" "${resume[@]}"
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  for phi in $phis; do
    run=$exp/phi$phi
    echo "== stage 3: export $run/ckpt/last.ckpt -> $run/export"
    $py -m asr_stream export "$run/ckpt/last.ckpt" --like "$run/model" --output "$run/export" --weights "$export_weights"
  done
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  for phi in $phis; do
    run=$exp/phi$phi
    for part in $test_splits; do
      echo "== stage 4: evaluate $run/export on $part (group, k = $eval_k, φ = $phi: its training φ)"
      $py -m asr_stream eval --data "$man/$part.jsonl" --model "$run/export" --mode group --k "$eval_k" --phi "$phi" \
        --output "$run/eval-$part-k$eval_k" --device "$device" "${limit[@]}"
    done
  done
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  for part in $test_splits; do
    for phi in $phis; do
      run=$exp/phi$phi
      echo "== stage 5: sweep k in {$ks} on $part with $run/export at its training φ = $phi"
      # shellcheck disable=SC2086
      $py -m asr_stream sweep --data "$man/$part.jsonl" --model "$run/export" --modes group --ks $ks --phis "$phi" \
        --output "$run/sweep-$part" --device "$device" "${limit[@]}"
    done
    echo "== stage 5: φ table on $part (one model per training φ, each streamed at its own φ) -> $exp/phi-table-$part.md"
    # shellcheck disable=SC2086
    $py - "$exp" "$part" $phis <<'EOF'
import json, sys
from pathlib import Path

exp, part, phis = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
lines = [f"φ table on {part}: one model trained per φ, each streamed (group mode) at its own training φ",
         "", "| training φ = inference φ | k | WER % | LAAL ms | AL ms | model |", "|---|---|---|---|---|---|"]
for phi in phis:
    for row in json.loads((exp / f"phi{phi}" / f"sweep-{part}" / "results.json").read_text()):
        lines.append(f"| {row['phi']:g} | {row['k']} | {100 * row['wer']:.1f} | {row['LAAL']:.0f} | {row['AL']:.0f} | "
                     f"phi{phi}/export |")
(exp / f"phi-table-{part}.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
    if [ -n "$infer_phis" ]; then
      first=${phis%% *}
      echo "== stage 5: INFERENCE φ only on $part: the one model trained at φ = $first streamed at φ in {$infer_phis}"
      # shellcheck disable=SC2086
      $py -m asr_stream sweep --data "$man/$part.jsonl" --model "$exp/phi$first/export" --modes group --ks "$eval_k" \
        --phis $infer_phis --output "$exp/sweep-$part-inference-phi" --device "$device" "${limit[@]}"
    fi
  done
fi
