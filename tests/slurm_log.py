"""Read what a `snakemake --executor slurm` run printed: its jobs, their SLURM job ids and logs
(workflow_scripts.cluster.preflight.parse_run, which the preflight uses on dry runs), and SLURM's own
job-completion records of the CI cluster.
"""

from __future__ import annotations

from workflow_scripts.cluster.preflight import Job, parse_run

__all__ = ["Job", "parse_run", "parse_jobcomp"]


def parse_jobcomp(text: str) -> dict[int, dict[str, str]]:
    """SLURM's jobcomp/filetxt records (`JobId=1 JobState=COMPLETED Partition=gpu ...`) by job id; the last
    record of a job wins (a requeued job has one record per run)."""
    records = {}
    for line in text.splitlines():
        rec = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "JobId" in rec:
            records[int(rec["JobId"])] = rec
    return records
