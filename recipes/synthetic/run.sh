#!/usr/bin/env bash
# The offline recipe: generate an English corpus with text-to-speech voices, build
# manifests and a language model (the training text and WordNet's other examples, no
# dev or test synset), train DeepSpeech2, tune the LM weights on dev, evaluate on
# held-out voices greedy and with the LM. Stages are numbered, idempotent (a .done
# marker each) and can be run alone with --stage/--stop-stage:
#   0 generate  1 manifests  2 language model  3 train  4 tune LM weights  5 evaluate
#
#   bash recipes/synthetic/run.sh                     # the demo size (~15 min, 2 CPUs)
#   bash recipes/synthetic/run.sh --hours 0.01 --config conf/synthetic/toy.yaml
#
# All logic lives in the Python package; this script only sequences it.
set -euo pipefail

stage=0
stop_stage=5
hours=12
lm_order=4
jobs=2
seed=0
data=data/synthetic
exp=exp/demo
config=conf/synthetic/demo.yaml
corpus_opts=""
# The project venv (make setup) unless PYTHON says otherwise.
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
extra=()

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  echo "options: --stage N --stop-stage N --hours H --jobs N --seed N --data DIR"
  echo "         --exp DIR --config YAML --corpus-opts 'OPTIONS FOR THE GENERATOR'"
  echo "         --lm-order N (default $lm_order)"
  echo "         [-- extra 'asr train' arguments]"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --hours) hours=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --corpus-opts) corpus_opts=$2; shift 2 ;;
    --lm-order) lm_order=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
mkdir -p "$data" "$exp"

if run_stage 0; then
  if [ -f "$data/corpus/.done" ]; then
    log "stage 0: corpus already in $data/corpus, skipping"
  else
    log "stage 0: generating ${hours} h of speech into $data/corpus"
    # shellcheck disable=SC2086  # corpus_opts is a list of options
    "$python" -m asr data synthetic "$data/corpus" --hours "$hours" \
      --jobs "$jobs" --seed "$seed" $corpus_opts
    touch "$data/corpus/.done"
  fi
fi

if run_stage 1; then
  if [ -f "$data/.manifests.done" ]; then
    log "stage 1: manifests already in $data, skipping"
  else
    for split in train dev test; do
      log "stage 1: $data/corpus/$split -> $data/$split.jsonl"
      "$python" -m asr manifest "$data/corpus/$split" -o "$data/$split.jsonl"
    done
    touch "$data/.manifests.done"
  fi
fi

if run_stage 2; then
  if [ -f "$data/.lm.done" ]; then
    log "stage 2: language model already in $data/lm.bin, skipping"
  else
    # The training transcripts and every other WordNet example, except the synsets
    # of dev and test sentences: no held-out sentence, or its siblings, reaches the LM.
    log "stage 2: $lm_order-gram LM from $data/train.jsonl and WordNet -> $data/lm.bin"
    # The generator's --wordnet-dir, if --corpus-opts gave one.
    wordnet_opt=$(grep -oE -- '--wordnet-dir[= ][^ ]+' <<<"$corpus_opts" | head -1 | tr '=' ' ' || true)
    # shellcheck disable=SC2086  # wordnet_opt is an option and its value, or nothing
    "$python" -m asr data synthetic-lm-text -o "$data/lm_text.txt" $wordnet_opt \
      --include "$data/train.jsonl" --exclude "$data/dev.jsonl" "$data/test.jsonl"
    "$python" -m asr lm build "$data/lm_text.txt" -o "$data/lm.bin" --order "$lm_order"
    touch "$data/.lm.done"
  fi
fi

if run_stage 3; then
  if [ -f "$exp/.train.done" ]; then
    log "stage 3: model already trained in $exp, skipping"
  else
    resume=()
    last=$(ls "$exp"/logs/checkpoints/last.ckpt 2>/dev/null || true)
    if [ -n "$last" ]; then
      log "stage 3: resuming from $last"
      resume=(--ckpt_path "$last")
    fi
    # The synthetic configs train in bf16-mixed: 1.5x faster than float32 on a CPU
    # with native bfloat16 (AVX512_BF16 or AMX); without it, float32 is faster.
    precision=()
    if ! grep -qE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then
      log "stage 3: this CPU has no native bfloat16 arithmetic: training in float32"
      precision=(--trainer.precision 32-true)
    fi
    log "stage 3: asr train --config $config (over the base it names), logs and checkpoints in $exp"
    "$python" -m asr train --config "$config" \
      --data.train_manifest "$data/train.jsonl" --data.val_manifest "$data/dev.jsonl" \
      --trainer.default_root_dir "$exp" --trainer.logger.init_args.save_dir "$exp" \
      --export "$exp/model.ckpt" "${precision[@]}" "${resume[@]}" "${extra[@]}"
    touch "$exp/.train.done"
  fi
fi

if run_stage 4; then
  if [ -f "$exp/.tune.done" ]; then
    log "stage 4: LM weights already tuned ($exp/decoder.json), skipping"
  else
    log "stage 4: tuning LM weight and word bonus on $data/dev.jsonl"
    "$python" -m asr lm tune "$data/dev.jsonl" --checkpoint "$exp/model.ckpt" \
      --lm "$data/lm.bin" --beam-width 16
    touch "$exp/.tune.done"
  fi
fi

if run_stage 5; then
  log "stage 5: evaluating $exp/model.ckpt on held-out voices ($data/test.jsonl)"
  "$python" -m asr evaluate "$data/test.jsonl" --checkpoint "$exp/model.ckpt" --json \
    > "$exp/test_results.json"
  "$python" -m asr evaluate "$data/test.jsonl" --checkpoint "$exp/model.ckpt" --json \
    --lm "$data/lm.bin" > "$exp/test_results_lm.json"
  "$python" - "$exp/test_results.json" "$exp/test_results_lm.json" <<'PY'
import json, sys
for path, name in zip(sys.argv[1:], ("greedy", "with LM")):
    r = json.load(open(path))
    print(f"test (held-out voices), {name}: WER {100 * r['wer']:.1f}%  "
          f"CER {100 * r['cer']:.1f}%  ({r['utterances']} utterances, {r['words']} words)")
    if None not in r["wer_ci_speakers"] + r["cer_ci_speakers"]:  # >= 2 speakers
        (wlo, whi), (clo, chi) = r["wer_ci_speakers"], r["cer_ci_speakers"]
        print(f"  {r['speakers']} speakers, 95% CI over speakers: WER {100 * wlo:.1f}-"
              f"{100 * whi:.1f}%  CER {100 * clo:.1f}-{100 * chi:.1f}%")
PY
  log "stage 5: results in $exp/test_results.json and $exp/test_results_lm.json"
fi
