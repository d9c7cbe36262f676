#!/usr/bin/env bash
# Stop the daemons started by .ci/slurm/start-slurm.sh, each by the PID recorded in $RUN/<name>.pid
# (a munged that start-slurm.sh reused is not in $RUN and keeps running). Cancels leftover jobs
# first, then removes Slurm's state and logs unless KEEP_SLURM_STATE=1 (copy logs out before).
#   sudo .ci/slurm/stop-slurm.sh
set -uo pipefail
SPOOL=${SLURM_CI_SPOOL:-/var/spool/slurm-ci}
RUN=${SLURM_CI_RUN:-/run/slurm-ci}

alive() { [[ -s $RUN/$1.pid ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# stop <name>: SIGTERM the PID in $RUN/<name>.pid, wait up to 10 s, then SIGKILL.
stop() {
  local f=$RUN/$1.pid p
  [[ -s $f ]] || return 0
  p=$(cat "$f")
  if kill "$p" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && { echo "stop-slurm.sh: $1 (pid $p) ignored SIGTERM: SIGKILL" >&2; kill -9 "$p" 2>/dev/null; }
    echo "stopped $1 (pid $p)"
  fi
  rm -f "$f"
}

if alive slurmctld; then   # cancel this cluster's leftover jobs while the controller still answers
  ids=$(squeue -h -o %i 2>/dev/null || true)
  if [[ -n $ids ]]; then
    scancel $ids 2>/dev/null || true
    for _ in $(seq 100); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.1; done
  fi
fi
stop slurmd
stop slurmctld
stop munged
rm -f "$RUN"/fakegpu*
[[ ${KEEP_SLURM_STATE:-0} == 1 ]] || rm -rf "$SPOOL"
rmdir "$RUN" 2>/dev/null || true
exit 0
