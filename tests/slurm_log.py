"""Read what a `snakemake --executor slurm` run printed: its jobs, their SLURM job ids and logs.

Used by tests/test_slurm_cluster.py to check that every target was made by a SLURM job.
Snakemake 9 prints one block per job started (`rule X:` for submitted jobs, `localrule X:` for jobs
run in the main process), the plugin one line per submission, and one line per finished job;
job logs shown by --show-failed-logs (which contain the jobs' own Snakemake output) are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADER = re.compile(r"^(local)?rule (\w+):$")
_FIELD = re.compile(r"^    (\w+): (.*)$")
_SUBMITTED = re.compile(r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


@dataclass
class Job:
    """One job block of the main log (the last block wins when a job is retried)."""

    rule: str
    local: bool
    jobid: int
    fields: dict[str, str] = field(default_factory=dict)
    slurm_ids: list[int] = field(default_factory=list)
    slurm_logs: list[str] = field(default_factory=list)
    finished: bool = False

    def files(self, key: str) -> list[str]:
        """`input`, `output` or `log` as a list of paths."""
        value = self.fields.get(key, "")
        return [p.strip() for p in value.split(",") if p.strip()]

    @property
    def wildcards(self) -> str:
        return self.fields.get("wildcards", "")

    @property
    def resources(self) -> dict[str, str]:
        out = {}
        for item in self.fields.get("resources", "").split(", "):
            key, _, value = item.partition("=")
            out[key.strip()] = value.strip()
        return out

    @property
    def gpus(self) -> int:
        return int(self.resources.get("gpu", "0") or 0)


def parse_run(text: str) -> dict[int, Job]:
    """Jobs of one run by Snakemake job id."""
    jobs: dict[int, Job] = {}
    block: Job | None = None

    def close(block: Job | None) -> None:
        if block is not None and block.jobid >= 0:
            previous = jobs.get(block.jobid)
            if previous is not None:  # a retry: keep the submissions of earlier attempts
                block.slurm_ids, block.slurm_logs = previous.slurm_ids, previous.slurm_logs
            jobs[block.jobid] = block

    for line in _main_process_lines(text):
        f = _FIELD.match(line)
        if block is not None and f:
            block.fields[f.group(1)] = f.group(2)
            if f.group(1) == "jobid":
                block.jobid = int(f.group(2))
            continue
        close(block)
        block = None
        header = _HEADER.match(line)
        if header:
            block = Job(rule=header.group(2), local=bool(header.group(1)), jobid=-1)
            continue
        sub = _SUBMITTED.match(line)
        if sub:
            job = jobs[int(sub.group(1))]
            job.slurm_ids.append(int(sub.group(2)))
            job.slurm_logs.append(sub.group(3))
            continue
        fin = _FINISHED.match(line)
        if fin and int(fin.group(1)) in jobs:
            jobs[int(fin.group(1))].finished = True
    return jobs


def _main_process_lines(text: str):
    """The lines Snakemake printed itself: drops the job logs that --show-failed-logs embeds
    (`Logfile <path>:` then the log between two identical lines of '=')."""
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("Logfile ") and line.endswith(":"):
            fence = next(lines, "")
            if fence and set(fence) == {"="}:
                for inner in lines:
                    if inner == fence:
                        break
                continue
            line = fence
        yield line


def parse_jobcomp(text: str) -> dict[int, dict[str, str]]:
    """SLURM's jobcomp/filetxt records (`JobId=1 JobState=COMPLETED Partition=gpu ...`) by job id."""
    records = {}
    for line in text.splitlines():
        rec = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "JobId" in rec:
            records[int(rec["JobId"])] = rec
    return records
