#!/usr/bin/env bash
# DeepSpeech2 on LibriSpeech: download, extract, manifests, language model, train,
# tune the LM weights on dev-clean, evaluate dev/test clean/other (greedy and with
# the LM), and write RESULTS.md. Stages are numbered, idempotent (a .done marker
# each) and can be run alone with --stage/--stop-stage.
#
#   bash recipes/librispeech/run.sh --parts 100                 # one GPU, 100 h
#   bash recipes/librispeech/run.sh --parts 960 --config conf/librispeech/ds2_paper.yaml -- --trainer.devices -1
#   bash recipes/librispeech/run.sh --data-dir /corpora --stage 2   # a copy you have
#
# All logic lives in the Python package (asr/librispeech/, asr data librispeech);
# this script only sequences it. See recipes/librispeech/README.md.
set -euo pipefail

stage=0
stop_stage=7
parts=960
data=data/librispeech
data_dir=""
mirror=https://www.openslr.org/resources
exp=exp/librispeech
config=conf/librispeech/ds2_1gpu.yaml
lm=3-gram.pruned.1e-7
lm_order=4
lm_memory=50%
device=""
tune_opts=""
eval_opts=""
# The project venv (make setup) unless PYTHON says otherwise.
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
extra=()

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  cat <<EOF
options: --stage N --stop-stage N   stages 0 download, 1 extract, 2 manifests, 3 LM,
                                    4 train, 5 tune, 6 evaluate, 7 RESULTS.md
         --parts 100|460|960        hours of training speech (default: $parts)
         --data DIR                 downloads, corpus, manifests, LM (default: $data)
         --data-dir DIR             an extracted copy (DIR/LibriSpeech/<part> or
                                    DIR/<part>): stages 0-1 are skipped
         --mirror URL               instead of $mirror (same file names)
         --exp DIR --config YAML    experiment dir, training config
         --lm NAME                  3-gram.pruned.1e-7 | 3-gram.pruned.3e-7 | 3-gram
                                    | 4-gram (OpenSLR 11 ARPA) | build (asr lm build
                                    from librispeech-lm-norm.txt.gz)
         --lm-order N --lm-memory M for --lm build (default: $lm_order, $lm_memory)
         --device cpu|cuda          for tuning and evaluation (default: cuda if any)
         --tune-opts '...' --eval-opts '...'   extra asr lm tune / asr evaluate options
         [-- extra 'asr train' arguments, e.g. --trainer.devices -1]
EOF
}
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --parts) parts=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --data-dir) data_dir=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --lm) lm=$2; shift 2 ;;
    --lm-order) lm_order=$2; shift 2 ;;
    --lm-memory) lm_memory=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --tune-opts) tune_opts=$2; shift 2 ;;
    --eval-opts) eval_opts=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$parts" in
  100|460|960) ;;
  *) echo "run.sh: --parts must be 100, 460 or 960, got '$parts'" >&2; exit 2 ;;
esac
case "$lm" in
  3-gram.pruned.1e-7|3-gram.pruned.3e-7|3-gram|4-gram|build) ;;
  *) echo "run.sh: unknown --lm '$lm'" >&2; usage >&2; exit 2 ;;
esac

log() { echo "[$(date +%H:%M:%S)] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
asr() { "$python" -m asr "$@"; }
mkdir -p "$data" "$exp"

downloads=$data/downloads
corpus=$data                      # holds LibriSpeech/<part> after stage 1
[ -n "$data_dir" ] && corpus=$data_dir
train_manifest=$data/train-$parts.jsonl
eval_sets=(dev-clean dev-other test-clean test-other)
if [ "$lm" = build ]; then lm_bin=$data/lm/built-${lm_order}gram.bin; else lm_bin=$data/lm/$lm.bin; fi
if [ -z "$device" ] && { run_stage 5 || run_stage 6; }; then
  device=$("$python" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
fi

if run_stage 0; then
  if [ -n "$data_dir" ]; then
    log "stage 0: using the copy in $data_dir, nothing to download"
  elif [ -f "$data/.download-$parts.done" ]; then
    log "stage 0: LibriSpeech $parts h + dev/test already in $downloads, skipping"
  else
    log "stage 0: downloading LibriSpeech $parts h + dev/test from $mirror/12 into $downloads"
    asr data librispeech download --parts "$parts" --dest "$downloads" --mirror "$mirror"
    touch "$data/.download-$parts.done"
  fi
fi

if run_stage 1; then
  if [ -n "$data_dir" ]; then
    log "stage 1: using the copy in $data_dir, nothing to extract"
  elif [ -f "$data/.extract-$parts.done" ]; then
    log "stage 1: already extracted into $data/LibriSpeech, skipping"
  else
    log "stage 1: extracting $downloads/*.tar.gz into $data/LibriSpeech"
    asr data librispeech extract --parts "$parts" --downloads "$downloads" --dest "$data"
    touch "$data/.extract-$parts.done"
  fi
fi

if run_stage 2; then
  if [ -f "$data/.manifests-$parts.done" ]; then
    log "stage 2: manifests already in $data, skipping"
  else
    log "stage 2: manifests of $corpus -> $data/<part>.jsonl, $train_manifest"
    asr data librispeech manifests --parts "$parts" --corpus "$corpus" --out "$data"
    touch "$data/.manifests-$parts.done"
  fi
fi

if run_stage 3; then
  if [ -f "$lm_bin.done" ]; then
    log "stage 3: language model $lm_bin already built, skipping"
  elif [ "$lm" = build ]; then
    log "stage 3: building a ${lm_order}-gram from librispeech-lm-norm.txt.gz -> $lm_bin"
    asr data librispeech download --lm-files librispeech-lm-norm.txt.gz \
      --dest "$downloads" --mirror "$mirror"
    asr lm build "$downloads/librispeech-lm-norm.txt.gz" -o "$lm_bin" \
      --order "$lm_order" --memory "$lm_memory"
    touch "$lm_bin.done"
  else
    log "stage 3: OpenSLR 11 $lm -> $lm_bin (lower-cased, binarized)"
    asr data librispeech lm --kind "$lm" --downloads "$downloads" -o "$lm_bin" \
      --mirror "$mirror"
    touch "$lm_bin.done"
  fi
fi

if run_stage 4; then
  if [ -f "$exp/.train.done" ]; then
    log "stage 4: model already trained in $exp, skipping"
  else
    resume=()
    last=$(ls "$exp"/logs/checkpoints/last.ckpt 2>/dev/null || true)
    if [ -n "$last" ]; then
      log "stage 4: resuming from $last"
      resume=(--ckpt_path "$last")
    fi
    log "stage 4: asr train --config $config on $train_manifest (validation: dev-clean, dev-other)"
    asr train --config "$config" \
      --data.train_manifest "$train_manifest" --data.val_manifest "[$data/dev-clean.jsonl,$data/dev-other.jsonl]" \
      --trainer.default_root_dir "$exp" --trainer.logger.init_args.save_dir "$exp" \
      --export "$exp/model.ckpt" "${resume[@]}" "${extra[@]}"
    log "stage 4: model in $exp/model.ckpt, curves in $exp/logs/training_curves.png"
    touch "$exp/.train.done"
  fi
fi

if run_stage 5; then
  if [ -f "$exp/.tune.done" ]; then
    log "stage 5: LM weights already tuned ($exp/decoder.json), skipping"
  else
    log "stage 5: tuning alpha/beta of $lm_bin on dev-clean -> $exp/decoder.json"
    # shellcheck disable=SC2086  # tune_opts is a list of options
    asr lm tune "$data/dev-clean.jsonl" --checkpoint "$exp/model.ckpt" --lm "$lm_bin" \
      --cache "$exp/dev-clean.logprobs.npz" --device "$device" $tune_opts \
      | tee "$exp/tune.txt"
    touch "$exp/.tune.done"
  fi
fi

if run_stage 6; then
  if [ -f "$exp/.evaluate.done" ]; then
    log "stage 6: results already in $exp/results, skipping"
  else
    mkdir -p "$exp/results"
    for set in "${eval_sets[@]}"; do
      for decoder in greedy lm; do
        out=$exp/results/$set.$decoder.json
        if [ -f "$out" ]; then log "stage 6: $out present"; continue; fi
        lm_opt=()
        [ "$decoder" = lm ] && lm_opt=(--lm "$lm_bin")
        log "stage 6: $set, $decoder decoding -> $out"
        # shellcheck disable=SC2086  # eval_opts is a list of options
        asr evaluate "$data/$set.jsonl" --checkpoint "$exp/model.ckpt" --json \
          "${lm_opt[@]}" --report "$exp/results/$set.$decoder.report.txt" \
          --device "$device" $eval_opts > "$out.tmp"
        mv "$out.tmp" "$out"
      done
    done
    touch "$exp/.evaluate.done"
  fi
fi

if run_stage 7; then
  log "stage 7: $exp/RESULTS.md"
  asr data librispeech results --results "$exp/results" --decoder-json "$exp/decoder.json" \
    --note "model: $exp/model.ckpt, trained with $config on LibriSpeech $parts h" \
    --note "language model: $lm_bin ($lm)" -o "$exp/RESULTS.md"
fi
