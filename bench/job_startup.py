"""Benchmark: where a job's wall time goes, for one representative job of every rule.

Runs each job as its rule runs it (Snakemake executes the rule's shell command, `--forcerun` of one
output) in a scratch copy of the repository whose `results/` are hard links to a finished run's, so the
real results are never touched. Every Python process of the job loads bench/job_tracer/sitecustomize.py,
which splits its wall time exclusively into interpreter start, imports, model construction/loading, data
loading, work and writing; `launcher` is what the job's wall time holds beyond its traced processes
(shell, torchrun's parent process, process start-up).

Named baseline, in the same run: the job's whole wall time. The table prints each phase's share of it,
and the last line the share of all jobs' wall time that is start-up (interpreter + imports + launcher)
against the share that is work.

    make run                                      # a finished run first (results/)
    python bench/job_startup.py [--rules finetune evaluate_finetune] [--skip pretrain] [--repeat 2]

Each job runs `--repeat` times (default 2) and the fastest counts, so that a cold page cache (the first
process to read torch's libraries) does not decide the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACER = REPO / "bench" / "job_tracer"
PHASES = ("interpreter", "imports", "model", "data", "work", "write")
# the job of a rule with many jobs that the bench picks: the first whose outputs contain one of these
PREFERRED = ("Cs0.5", "clip")


def dry_run_jobs(workdir: Path, configfile: Path | None) -> dict[str, list[str]]:
    """{rule: outputs of its preferred job} from a --forceall dry run."""
    cmd = [sys.executable, "-m", "snakemake", "--forceall", "-n", "--cores", "2"]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dry run failed:\n{proc.stderr[-3000:]}")
    out = proc.stdout
    jobs: dict[str, list[list[str]]] = {}
    rule = None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
            continue
        m = re.match(r"^\s+output: (.*)$", line)
        if m and rule:
            jobs.setdefault(rule, []).append([p.strip() for p in m.group(1).split(",")])
            rule = None
    chosen = {}
    for rule, outputs in jobs.items():
        pick = next((o for key in PREFERRED for o in outputs if any(key in p for p in o)), outputs[0])
        chosen[rule] = pick
    return chosen


def scratch_copy(dest: Path) -> None:
    """The repository's files and results/ as hard links (same mtimes: nothing looks out of date)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dest / f)
    shutil.copytree(REPO / "results", dest / "results", copy_function=os.link)
    # numba's on-disk cache of compiled functions: without it every numba job would compile again
    cache = REPO / "workflow_scripts" / "__pycache__"
    if cache.is_dir():
        shutil.copytree(cache, dest / "workflow_scripts" / "__pycache__", copy_function=os.link, dirs_exist_ok=True)


def run_job(workdir: Path, rule: str, target: str, configfile: Path | None, trace: Path) -> float:
    """Force one job to run again (its rule's shell command, through Snakemake); returns its wall time.
    Only that rule may run: earlier benchmarked jobs rewrote upstream files, which must not cascade."""
    env = {**os.environ, "PYTHONPATH": f"{TRACER}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "JOB_PHASES_OUT": str(trace)}
    # the target first: --forcerun and --configfile take several values and would swallow it
    cmd = [sys.executable, "-m", "snakemake", target, "--cores", "2", "--allowed-rules", rule, "--forcerun", target]
    if configfile:
        cmd += ["--configfile", str(configfile)]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"job for {target} failed:\n{proc.stderr[-3000:]}")
    return time.time() - t0


def split_job(records: list[dict]) -> dict[str, float]:
    """Phases of one job from its processes' records: the root process's wall time, rank-0 phases."""
    if not records:
        return {}
    start, end = min(r["start"] for r in records), max(r["end"] for r in records)
    leaves = [r for r in records if not any(o["ppid"] == r["pid"] for o in records)]
    main = next((r for r in leaves if r.get("rank") in (None, "0")), leaves[0])
    row = {"wall": end - start, "interpreter": main["interpreter"]}
    row.update({p: main["phases"].get(p, 0.0) for p in PHASES if p != "interpreter"})
    row["launcher"] = row["wall"] - (main["end"] - main["start"])
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", type=Path, help="the config of the finished run (default: config.yaml)")
    ap.add_argument("--rules", nargs="*", help="only these rules (default: every rule with a shell command)")
    ap.add_argument("--skip", nargs="*", default=[], help="rules to leave out (e.g. pretrain: 2 min)")
    ap.add_argument("--json", type=Path, help="also write the table as JSON here")
    ap.add_argument("--repeat", type=int, default=2, help="runs per job; the fastest counts (default 2)")
    args = ap.parse_args(argv)
    if not (REPO / "results").is_dir():
        sys.exit("no results/: run `make run` first (the bench re-runs jobs of a finished run)")
    configfile = args.configfile.resolve() if args.configfile else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="job_startup.") as tmp:
        work = Path(tmp) / "repo"
        scratch_copy(work)
        jobs = dry_run_jobs(work, configfile)
        for rule, outputs in jobs.items():
            if rule == "all" or rule in args.skip or (args.rules and rule not in args.rules):
                continue
            best = None
            for attempt in range(args.repeat):       # the fastest of `repeat` runs: page cache warm
                trace = Path(tmp) / f"{rule}.{attempt}.jsonl"
                snake_wall = run_job(work, rule, outputs[0], configfile, trace)
                records = [json.loads(line) for line in trace.read_text().splitlines()] if trace.exists() else []
                row = {"rule": rule, "target": outputs[0], "snakemake": snake_wall, **split_job(records)}
                if best is None or row.get("wall", 0) < best.get("wall", 0):
                    best = row
            row = best
            rows.append(row)
            print(f"{rule}: {row.get('wall', float('nan')):.1f} s", file=sys.stderr, flush=True)
    cols = ("wall", "launcher", "interpreter", "imports", "model", "data", "work", "write")
    print(f"{'rule':22s}" + "".join(f"{c:>12s}" for c in cols) + "   start-up share")
    total_wall = total_start = 0.0
    for r in rows:
        if "wall" not in r:
            print(f"{r['rule']:22s}  (no traced Python process)")
            continue
        start = r["launcher"] + r["interpreter"] + r["imports"]
        total_wall += r["wall"]
        total_start += start
        print(f"{r['rule']:22s}" + "".join(f"{r[c]:12.2f}" for c in cols) + f"   {start / r['wall']:6.1%}")
    if total_wall:
        print(f"all jobs: wall {total_wall:.1f} s, start-up (launcher + interpreter + imports) "
              f"{total_start:.1f} s = {total_start / total_wall:.1%} of the baseline (whole job wall time)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
