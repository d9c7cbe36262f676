"""Running on a SLURM cluster (profiles/slurm).

- `preflight`: what each rule asks `sbatch` for and whether the cluster can give it, and the site profile
  writer; `python -m workflow_scripts.cluster.preflight {check,write-profile}`.
"""
