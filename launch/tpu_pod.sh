#!/usr/bin/env bash
# Start the same maskssl command on every worker of a Cloud TPU VM slice.
# JAX auto-detects the coordinator, process count and id on Cloud TPU, so
# each worker runs `python -m maskssl.main --multihost ...`.
#   launch/tpu_pod.sh [--dry-run] --tpu NAME --zone ZONE [--project P] \
#       [--create --accelerator v5litepod-16 --version tpu-ubuntu2204-base] \
#       [--repo URL_OR_PATH] -- --config=configs/sma_particle.py \
#       --workdir=/mnt/shared/runs/sma
# The workdir must be a file system every worker mounts (gcsfuse, Filestore):
# metrics and config are written with plain open(), checkpoints by orbax.
set -euo pipefail
DRY=0; TPU=""; ZONE=""; PROJECT=""; CREATE=0; ACCEL="v5litepod-16"
VERSION="tpu-ubuntu2204-base"; REPO="maskssl"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --tpu) TPU="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --create) CREATE=1; shift ;;
    --accelerator) ACCEL="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --repo) REPO="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -n $TPU && -n $ZONE ]] || { echo "need --tpu and --zone" >&2; exit 2; }
proj=(); [[ -n $PROJECT ]] && proj=(--project="$PROJECT")
run() { if [[ $DRY == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }
if [[ $CREATE == 1 ]]; then
  run gcloud compute tpus tpu-vm create "$TPU" --zone="$ZONE" "${proj[@]}" \
      --accelerator-type="$ACCEL" --version="$VERSION"
fi
ARGS=$(printf '%q ' "$@")
# --repo: a path already present on every worker, or a git URL to clone
# (pulled again if the clone exists).
if [[ $REPO == *://* || $REPO == *.git ]]; then
  GET="(git clone -q $(printf '%q' "$REPO") maskssl || git -C maskssl pull -q) && cd maskssl"
else
  GET="cd $(printf '%q' "$REPO")"
fi
SETUP="$GET && pip install -q -e . 'jax[tpu]>=0.10,<0.11'"
run gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" "${proj[@]}" \
    --worker=all --command="$SETUP && python3 -m maskssl.main --multihost $ARGS"
