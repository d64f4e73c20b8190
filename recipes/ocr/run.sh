#!/usr/bin/env bash
# Text recognition in images with a CRNN and our CTC loss: CAPTCHAs (the captcha
# package's 160x60 images, 4-6 digits and capital letters), then rendered text lines
# (WordNet's words in DejaVu fonts). Each set is generated from a seed; train, dev
# and test draw from disjoint streams. Stages are numbered, idempotent (a .done
# marker each) and can be run alone with --stage/--stop-stage:
#   0 generate CAPTCHAs  1 train on them  2 evaluate on held-out CAPTCHAs
#   3 generate text lines  4 train on them  5 evaluate on held-out lines
#
#   bash recipes/ocr/run.sh --stop-stage 2   # CAPTCHAs: make demo-ocr (5 min of CPU for training)
#   bash recipes/ocr/run.sh --stage 3        # text lines
#
# All logic lives in the Python package; this script only sequences it.
set -euo pipefail

stage=0
stop_stage=5
seed=0
jobs=2
data=data/ocr
exp=exp/ocr
config=conf/ocr/captcha.yaml
lines_config=conf/ocr/lines.yaml
captcha_counts="40000 1000 2000"  # train dev test
lines_counts="10000 500 1000"
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
extra=()

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  echo "options: --stage N --stop-stage N --seed N --jobs N --data DIR --exp DIR"
  echo "         --config YAML --lines-config YAML"
  echo "         --captcha-counts 'TRAIN DEV TEST' (default: $captcha_counts)"
  echo "         --lines-counts 'TRAIN DEV TEST' (default: $lines_counts)"
  echo "         [-- extra 'asr ocr train' arguments, for both trainings]"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --lines-config) lines_config=$2; shift 2 ;;
    --captcha-counts) captcha_counts=$2; shift 2 ;;
    --lines-counts) lines_counts=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

# generate KIND COUNTS: train, dev and test sets of KIND under $data/KIND
generate() {
  local kind=$1 split count
  read -r -a counts <<<"$2"
  local i=0
  for split in train dev test; do
    count=${counts[$i]}; i=$((i + 1))
    local dir="$data/$kind/$split"
    if [ -f "$dir/.done" ]; then
      log "$kind $split: already in $dir, skipping"
      continue
    fi
    log "$kind $split: generating $count images into $dir (seed $seed)"
    "$python" -m asr ocr generate "$kind" "$dir" --count "$count" --seed "$seed" \
      --split "$split" --jobs "$jobs"
    touch "$dir/.done"
  done
}

# train KIND CONFIG EXPDIR: asr ocr train, resuming from last.ckpt if a run was cut
train() {
  local kind=$1 cfg=$2 dir=$3
  if [ -f "$dir/.train.done" ]; then
    log "$kind: model already trained in $dir, skipping"
    return
  fi
  local resume=()
  if [ -f "$dir/logs/checkpoints/last.ckpt" ]; then
    log "$kind: resuming from $dir/logs/checkpoints/last.ckpt"
    resume=(--ckpt_path "$dir/logs/checkpoints/last.ckpt")
  fi
  log "$kind: asr ocr train --config $cfg, logs in $dir/logs (uptime: $(uptime | sed 's/.*load/load/'))"
  "$python" -m asr ocr train --config "$cfg" \
    --data.train_manifest "$data/$kind/train/manifest.jsonl" \
    --data.val_manifest "$data/$kind/dev/manifest.jsonl" \
    --trainer.default_root_dir "$dir" --trainer.logger.init_args.save_dir "$dir" \
    --export "$dir/model.ckpt" "${resume[@]}" "${extra[@]}"
  log "$kind: trained (uptime: $(uptime | sed 's/.*load/load/'))"
  touch "$dir/.train.done"
}

# evaluate KIND EXPDIR: scores on the held-out test set, as JSON and one line
evaluate() {
  local kind=$1 dir=$2
  log "$kind: evaluating $dir/model.ckpt on $data/$kind/test/manifest.jsonl"
  "$python" -m asr ocr evaluate "$data/$kind/test/manifest.jsonl" \
    --checkpoint "$dir/model.ckpt" --json > "$dir/test_results.json"
  "$python" - "$dir/test_results.json" "$kind" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} test: sequence accuracy {100 * r['sequence_accuracy']:.2f}% "
      f"({r['correct']} of {r['images']}), CER {100 * r['cer']:.2f}%")
PY
}

if run_stage 0; then generate captcha "$captcha_counts"; fi
if run_stage 1; then train captcha "$config" "$exp"; fi
if run_stage 2; then evaluate captcha "$exp"; fi
if run_stage 3; then generate lines "$lines_counts"; fi
if run_stage 4; then train lines "$lines_config" "$exp-lines"; fi
if run_stage 5; then evaluate lines "$exp-lines"; fi
