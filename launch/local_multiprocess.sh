#!/usr/bin/env bash
# Run N maskssl processes on this machine (JAX distributed runtime over
# loopback, gloo CPU collectives), each with D virtual CPU devices.
#   launch/local_multiprocess.sh [--dry-run] [-n N] [-d D] [-p PORT] -- \
#       --config=configs/sma_particle.py:quick --workdir=runs/mp
set -euo pipefail
N=2; D=4; PORT=12355; DRY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    -n) N="$2"; shift 2 ;;
    -d) D="$2"; shift 2 ;;
    -p) PORT="$2"; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
PY=${PYTHON:-python3}
pids=()
for ((i = 0; i < N; i++)); do
  cmd=(env "XLA_FLAGS=--xla_force_host_platform_device_count=$D"
       JAX_PLATFORMS=cpu JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo
       "$PY" -m maskssl.main --coordinator_address="127.0.0.1:$PORT"
       --num_processes="$N" --process_id="$i" "$@")
  if [[ $DRY == 1 ]]; then
    printf '%q ' "${cmd[@]}"; echo
  else
    "${cmd[@]}" &
    pids+=($!)
  fi
done
[[ $DRY == 1 ]] && exit 0
# If any process fails, stop the others instead of letting them hang (they
# would also stop by themselves: a collective with a dead peer fails, and the
# distributed runtime's heartbeat timeout bounds the rest). A SIGTERM/Ctrl-C
# to this script is forwarded, so every process saves and exits.
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for _ in "${pids[@]}"; do
  rc=0; wait -n || rc=$?
  if [[ $rc != 0 && $status == 0 ]]; then
    status=$rc; kill -TERM "${pids[@]}" 2>/dev/null || true
  fi
done
exit $status
