#!/usr/bin/env bash
# Fine-tuning, measured: adapt the demo model to the held-out test voice it handles
# worst with a few minutes of that voice's speech, against training from scratch on
# the same minutes for the same number of steps, and see what the other voices lose.
#   0 score the model per test voice, pick the worst
#   1 ~10 min (train) + ~2 min (dev) of that voice on sentences no dev/test voice says
#   2 manifests   3 fine-tune   4 from scratch   5 evaluate   6 the table
#
#   bash recipes/synthetic/finetune.sh                  # after make demo (or run.sh)
#   bash recipes/synthetic/finetune.sh --model /work/main/exp/demo/model.ckpt \
#     --data /work/main/data/synthetic                  # another tree's demo, read-only
#
# Stages are idempotent (a .done marker each); --stage/--stop-stage run a range.
set -euo pipefail

stage=0
stop_stage=6
model=exp/demo/model.ckpt
data=data/synthetic
exp=exp/finetune
minutes=10
dev_minutes=2
epochs=8
per_voice=40  # test utterances scored per voice (0: all)
jobs=2
speaker=""   # default: the worst test voice (stage 0)
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  echo "options: --stage N --stop-stage N --model CKPT --data DIR (the demo's corpus"
  echo "         and manifests) --exp DIR --minutes M --dev-minutes M --epochs N"
  echo "         --speaker ID (skip the choice) --per-voice N (test utterances per"
  echo "         voice, default $per_voice; 0: all) --jobs N"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --minutes) minutes=$2; shift 2 ;;
    --dev-minutes) dev_minutes=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --speaker) speaker=$2; shift 2 ;;
    --per-voice) per_voice=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "finetune.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
report() { "$python" recipes/synthetic/finetune_report.py "$@"; }
mkdir -p "$exp"
if [ ! -f "$model" ]; then
  echo "finetune.sh: $model: no such model (make demo writes exp/demo/model.ckpt)" >&2
  exit 1
fi
# Both arms in the precision the demo trained in where the CPU has bfloat16.
precision=32-true
if grep -qE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then
  precision=bf16-mixed
fi

if run_stage 0; then
  if [ -f "$exp/before/.done" ]; then
    log "stage 0: $model already scored per voice in $exp/before, skipping"
  else
    # The first N utterances of every test voice: the scores of each arm on the
    # same utterances, in minutes on a shared CPU.
    log "stage 0: $per_voice utterances per voice of $data/test.jsonl -> $exp/test.jsonl"
    report subset "$data/test.jsonl" "$per_voice" "$exp/test.jsonl"
    log "stage 0: scoring $model on $exp/test.jsonl, per voice"
    mkdir -p "$exp/before"
    "$python" -m asr evaluate "$exp/test.jsonl" --checkpoint "$model" --json \
      --report "$exp/before/test.greedy.report.txt" > "$exp/before/test.json"
    touch "$exp/before/.done"
  fi
fi
if [ -z "$speaker" ]; then
  speaker=$(report worst "$exp/before/test.json")
fi
voice=$exp/voice-$speaker
log "the voice: speaker $speaker"

if run_stage 1; then
  if [ -f "$voice/.corpus.done" ]; then
    log "stage 1: speech of speaker $speaker already in $voice, skipping"
  else
    log "stage 1: ${minutes} + ${dev_minutes} min of speaker $speaker -> $voice"
    "$python" -m asr data synthetic-voice "$data/corpus" "$voice" \
      --speaker "$speaker" --minutes "$minutes" --dev-minutes "$dev_minutes" \
      --jobs "$jobs"
    touch "$voice/.corpus.done"
  fi
fi

if run_stage 2; then
  for split in train dev; do
    log "stage 2: $voice/$split -> $voice/$split.jsonl"
    "$python" -m asr manifest "$voice/$split" -o "$voice/$split.jsonl"
  done
  log "stage 2: speaker $speaker's utterances of $exp/test.jsonl -> $voice/test.jsonl"
  report select "$exp/test.jsonl" "$speaker" "$voice/test.jsonl"
fi

train() {  # train NAME CONFIG [asr train options]: one arm, resumable, in $exp/NAME
  local name=$1 config=$2 out=$exp/$1
  shift 2
  if [ -f "$out/.done" ]; then
    log "$name: already trained in $out, skipping"
    return
  fi
  local resume=()
  if [ -f "$out/logs/checkpoints/last.ckpt" ]; then
    resume=(--ckpt_path "$out/logs/checkpoints/last.ckpt")
  fi
  log "$name: asr train --config $config $* (${epochs} epochs, $precision) -> $out"
  /usr/bin/time -f "$name: %e s wall, %U s user" \
    "$python" -m asr train --config "$config" \
    --data.train_manifest "$voice/train.jsonl" --data.val_manifest "$voice/dev.jsonl" \
    --trainer.max_epochs "$epochs" --trainer.precision "$precision" \
    --trainer.default_root_dir "$out" --trainer.logger.init_args.save_dir "$out" \
    --export "$out/model.ckpt" "$@" "${resume[@]}" 2>&1 | tee "$out.log" | grep -E \
    "validation|training:|wall|error" || true
  [ -f "$out/model.ckpt" ] || { echo "finetune.sh: $name failed ($out.log)" >&2; exit 1; }
  touch "$out/.done"
}

if run_stage 3; then
  mkdir -p "$exp/tuned"
  train tuned conf/finetune.yaml --model.init_from "$model"
fi

if run_stage 4; then
  # The demo's own recipe (its learning rate, its phone head), the same data, batches
  # and epochs: the same number of steps.
  mkdir -p "$exp/scratch"
  train scratch conf/synthetic/demo.yaml
fi

if run_stage 5; then
  log "stage 5: the fine-tuned model on every test voice (forgetting included)"
  "$python" -m asr evaluate "$exp/test.jsonl" --checkpoint "$exp/tuned/model.ckpt" \
    --json > "$exp/tuned/test.json"
  log "stage 5: the model from scratch on speaker $speaker's test utterances"
  "$python" -m asr evaluate "$voice/test.jsonl" --checkpoint "$exp/scratch/model.ckpt" \
    --json > "$exp/scratch/test.json"
fi

if run_stage 6; then
  report table --speaker "$speaker" --before "$exp/before/test.json" \
    --tuned "$exp/tuned/test.json" --scratch "$exp/scratch/test.json" \
    --runs "$exp/tuned" "$exp/scratch" | tee "$exp/table.md"
fi
