#!/usr/bin/env bash
# Start a single-node Slurm cluster (munged + slurmctld + slurmd) without systemd, for CI.
#
#   sudo FAKE_GPUS=2 .ci/slurm/start-slurm.sh      # then: sinfo; sbatch --gpus=1 --wrap 'env | grep CUDA'
#   sudo .ci/slurm/stop-slurm.sh                   # stops exactly the daemons started here, by PID
#
# Needs Debian's slurmctld slurmd slurm-client munge (apt-get install -y --no-install-recommends ...).
# No accounting database: clients must poll with squeue (profiles/slurm-ci sets slurm-status-command).
# The node is called `localhost` (slurmd -N localhost), advertises $(nproc) CPUs, the machine's
# memory minus 512 MB and FAKE_GPUS GPUs of model FAKE_GPU_TYPE whose device files are symlinks to
# /dev/null: Slurm then schedules `--gpus=N` jobs and sets CUDA_VISIBLE_DEVICES, but CUDA itself finds
# no device. Partitions: `cpu` (default) and `gpu`, both on this node.
# Every PID this script starts is recorded in $RUN/*.pid; stop-slurm.sh reads only those.
# Tested on Debian 12 with Slurm 22.05.
set -euo pipefail

NGPU=${FAKE_GPUS:-2}
GPU_TYPE=${FAKE_GPU_TYPE:-fake}                  # the GPU model jobs may ask for (--gpus=fake:1)
SPOOL=${SLURM_CI_SPOOL:-/var/spool/slurm-ci}   # state + daemon logs (removed by stop-slurm.sh)
RUN=${SLURM_CI_RUN:-/run/slurm-ci}              # pid files of the daemons started here
MARK="# written by .ci/slurm/start-slurm.sh"

die() { echo "start-slurm.sh: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root (the daemons switch users)"
[[ $NGPU =~ ^[1-9][0-9]*$ ]] || die "FAKE_GPUS must be a positive integer, got '$NGPU'"
for b in munged slurmctld slurmd; do
  [[ -x /usr/sbin/$b ]] || die "/usr/sbin/$b missing: apt-get install slurmctld slurmd slurm-client munge"
done
for f in "$RUN"/*.pid; do   # refuse to start twice (pid files of a live daemon from a previous start)
  [[ -s $f ]] && kill -0 "$(cat "$f")" 2>/dev/null && die "$(basename "$f" .pid) (pid $(cat "$f")) is still running: run .ci/slurm/stop-slurm.sh first"
done
# Never overwrite a real site configuration.
if [[ -s /etc/slurm/slurm.conf ]] && ! grep -qxF "$MARK" /etc/slurm/slurm.conf; then
  die "/etc/slurm/slurm.conf exists and was not written by this script: refusing to overwrite it"
fi
# A host running systemd may have started the packaged services on install: stop them (they would
# hold the ports and pid files).
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
  systemctl stop slurmd slurmctld munge 2>/dev/null || true
fi

t0=$(date +%s%N); el() { local ms=$(( ($(date +%s%N) - t0) / 1000000 )); printf '%d.%03d' $((ms/1000)) $((ms%1000)); }
# wait_for <what> <cmd...>: poll for up to 60 s
wait_for() { local what=$1; shift; for _ in $(seq 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
             die "timeout waiting for $what (logs: $SPOOL/log)"; }

# CPUs the node advertises; more than nproc (e.g. SLURM_CI_CPUS=$((2 * $(nproc)))) lets short jobs,
# which mostly wait on Python start-up, overlap (SlurmdParameters=config_overrides accepts it).
NCPU=${SLURM_CI_CPUS:-$(nproc)}
[[ $NCPU =~ ^[1-9][0-9]*$ ]] || die "SLURM_CI_CPUS must be a positive integer, got '$NCPU'"
# RealMemory must be <= what slurmd detects, otherwise the node is DRAINed.
MEM_MB=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) - 512 ))
mkdir -p /etc/slurm "$SPOOL"/ctld "$SPOOL"/d "$SPOOL"/log "$RUN"
chown -R slurm:slurm "$SPOOL"/ctld "$SPOOL"/log "$RUN"

cat > /etc/slurm/slurm.conf <<EOF
$MARK
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$SPOOL/log/slurmctld.log
SlurmdLogFile=$SPOOL/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# One line per finished job (id, state, partition, TRES...): what tests check that jobs ran here.
JobCompType=jobcomp/filetxt
JobCompLoc=$SPOOL/log/jobcomp.txt
SchedulerType=sched/backfill
# Start pending jobs within ~2 s (defaults: 60 s main loop, 30 s backfill): a requeued job becomes
# eligible again while the test waits for it.
SchedulerParameters=sched_interval=2,bf_interval=1
# A requeued job waits cred_expire + 1 s before it may start again (default 120 s); 10 s still leaves
# job-step credentials ample time on a loaded 2-core machine (the minimum is 5).
AuthInfo=cred_expire=10
# SIGKILL 5 s after the SIGTERM of a cancel/requeue (default 30 s): a fine-tune saves resume.pt in far less.
KillWait=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
MpiDefault=none
MailProg=/bin/true
# Finished jobs stay visible to squeue for MinJobAge seconds; the snakemake plugin's squeue mode
# needs MinJobAge >= 3 * slurm-init-seconds-before-status-checks (else it falls back to sacct).
MinJobAge=300
GresTypes=gpu
NodeName=localhost CPUs=$NCPU RealMemory=$MEM_MB Gres=gpu:$GPU_TYPE:$NGPU State=UNKNOWN
# Two partitions over the same node, as a site's CPU and GPU partitions.
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
EOF

# Fake GPUs: gres File= must stat() as a character device (a regular file gives no CUDA_VISIBLE_DEVICES).
for i in $(seq 0 $((NGPU - 1))); do ln -sfn /dev/null "$RUN/fakegpu$i"; done
cat > /etc/slurm/gres.conf <<EOF
$MARK
AutoDetect=off
NodeName=localhost Name=gpu Type=$GPU_TYPE File=$RUN/fakegpu[0-$((NGPU - 1))]
EOF

# --- munge: reuse a working munged (e.g. the host's service), else start our own -------------
if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  echo "munged already running: reusing it (not ours to stop)"
else
  [[ -s /etc/munge/munge.key ]] || { mungekey --create --force 2>/dev/null || /usr/sbin/create-munge-key -f; }
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge; chmod 755 /run/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged          # daemonizes, writes /run/munge/munged.pid
  wait_for munged bash -c 'munge -n </dev/null | unmunge'
  cp /run/munge/munged.pid "$RUN/munged.pid"
  echo "munged up            t=$(el)s pid=$(cat "$RUN/munged.pid")"
fi

# --- slurmctld + slurmd ------------------------------------------------------------------------
/usr/sbin/slurmctld -c -i          # -c: clean state; daemonizes as SlurmUser, pid -> $RUN/slurmctld.pid
wait_for slurmctld test -s "$RUN/slurmctld.pid"
/usr/sbin/slurmd -N localhost      # -N: node name independent of the machine's hostname
wait_for slurmd test -s "$RUN/slurmd.pid"
wait_for 'idle node' bash -c "sinfo -h -N -o '%T' | grep -qx idle"
echo "slurm idle           t=$(el)s slurmctld=$(cat "$RUN/slurmctld.pid") slurmd=$(cat "$RUN/slurmd.pid") cpus=$NCPU gpus=$NGPU"
sinfo
