#!/usr/bin/env bash
# Put the challenge's FineWeb sp1024 shards and tokenizer on this node's local disk, once.
#
# Used by the cluster definitions (worker setup commands, the KubeRay init container) and by
# cluster/Dockerfile when BAKE_TRAIN_SHARDS is set. Safe to run again and to run concurrently on
# one node: a lock serialises runs, and a completion marker, written only after the files are
# checked, makes later runs return at once. An interrupted download leaves no marker, so the next
# run fetches again.
#
# Layout written under ROOT (what DATA_PATH and TOKENIZER_PATH in the image point at):
#   ROOT/datasets/fineweb10B_sp1024/fineweb_{train,val}_*.bin
#   ROOT/tokenizers/fineweb_1024_bpe.model
set -euo pipefail

readonly VARIANT=sp1024

usage() {
  cat <<USAGE
usage: fetch_data.sh [--root DIR] [--train-shards N]

  --root DIR          where the data goes (default: \$GOLF_DATA_ROOT, else /data/golf)
  --train-shards N    FineWeb train shards of 100M tokens each; 80 is the full 8B-token set
                      (default: \$GOLF_TRAIN_SHARDS, else 80)
USAGE
}

die() {
  echo "fetch_data.sh: $*" >&2
  exit 1
}

root="${GOLF_DATA_ROOT:-/data/golf}"
train_shards="${GOLF_TRAIN_SHARDS:-80}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --root)
      [[ $# -ge 2 ]] || { usage >&2; die "--root needs a directory"; }
      root="$2"
      shift 2
      ;;
    --train-shards)
      [[ $# -ge 2 ]] || { usage >&2; die "--train-shards needs a number"; }
      train_shards="$2"
      shift 2
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument '$1'"
      ;;
  esac
done

[[ "$train_shards" =~ ^[1-9][0-9]*$ ]] ||
  die "--train-shards must be a whole number of shards >= 1, got '$train_shards' (80 is the full set)"

dataset_dir="$root/datasets/fineweb10B_$VARIANT"
tokenizer="$root/tokenizers/fineweb_1024_bpe.model"

mkdir -p "$root" 2>/dev/null && [[ -w "$root" ]] ||
  die "cannot write to $root: give the node user write access (the image chowns /data to 'ray') or pass --root DIR"

# Setup commands can run twice on one node (a re-run `ray up`, a restarted init container): the
# second run waits here for the first instead of downloading the same files beside it.
exec 9>"$root/.fetch.lock"
flock 9

# Any completed fetch of at least as many shards satisfies this request.
for marker in "$root/.complete-$VARIANT-train"*; do
  [[ -e "$marker" ]] || continue
  have="${marker##*-train}"
  if [[ "$have" =~ ^[0-9]+$ ]] && ((have >= train_shards)); then
    echo "fetch_data.sh: $have train shards already in $dataset_dir (marker $marker); nothing to do"
    exit 0
  fi
done

command -v golf >/dev/null ||
  die "the 'golf' command is not on PATH: run this inside the golf-sweeps image, or install the project (pip install -e .)"

echo "fetch_data.sh: fetching $train_shards train shards + val + tokenizer ($VARIANT) into $root"
golf data fineweb --variant "$VARIANT" --train-shards "$train_shards" --out "$root" ||
  die "'golf data fineweb' failed (see above); the node needs outbound HTTPS to the Hugging Face Hub"

shopt -s nullglob
train_files=("$dataset_dir"/fineweb_train_*.bin)
val_files=("$dataset_dir"/fineweb_val_*.bin)
shopt -u nullglob
((${#train_files[@]} >= train_shards)) ||
  die "expected >= $train_shards train shards in $dataset_dir after the download, found ${#train_files[@]}"
((${#val_files[@]} >= 1)) || die "no validation shard (fineweb_val_*.bin) in $dataset_dir after the download"
[[ -s "$tokenizer" ]] || die "tokenizer $tokenizer is missing or empty after the download"

touch "$root/.complete-$VARIANT-train$train_shards"
echo "fetch_data.sh: ready: DATA_PATH=$dataset_dir TOKENIZER_PATH=$tokenizer"
