#!/usr/bin/env bash
# Install what the real-cluster test needs, skipping what is already there:
#   Debian's slurmctld slurmd slurm-client munge (apt-get; needs root) and the SLURM executor
#   plugin pinned in envs/requirements-slurm.txt, into the interpreter PYTHON (default .venv/bin/python).
#   sudo .ci/slurm/install-slurm.sh [PYTHON]
# Exit 0 when everything is installed; otherwise 1 with the reason on stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-.venv/bin/python}

die() { echo "install-slurm.sh: $*" >&2; exit 1; }
missing=0
for b in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/sbin/munged; do [[ -x $b ]] || missing=1; done
if [[ $missing == 1 ]]; then
  [[ $(id -u) == 0 ]] || die "not root: cannot apt-get install slurmctld slurmd slurm-client munge"
  command -v apt-get >/dev/null || die "no apt-get on this machine: install slurmctld slurmd slurm-client munge yourself"
  apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed (no network?)"
  # Services are not started by the package scripts without an init system; start-slurm.sh does it.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
    || die "apt-get install slurmctld slurmd slurm-client munge failed"
fi
"$PY" -m pip install -q --disable-pip-version-check -r envs/requirements-slurm.txt >/dev/null 2>&1 \
  || die "$PY -m pip install -r envs/requirements-slurm.txt failed (no access to PyPI?)"
"$PY" -c "import snakemake_executor_plugin_slurm" || die "the SLURM executor plugin does not import"
echo "install-slurm.sh: slurm $(sinfo --version 2>/dev/null | cut -d' ' -f2), $("$PY" -m pip show snakemake-executor-plugin-slurm 2>/dev/null | awk '/^Version/{print "plugin " $2}')"
