"""Before a SLURM run: what each rule will ask `sbatch` for, and whether this cluster can give it.

    python -m workflow_scripts.cluster.preflight check --profile slurm --configfile my_cluster.yaml [TARGETS]
    python -m workflow_scripts.cluster.preflight write-profile --partition cpu --gpu-partition gpu \\
        --account my_account --gpu-model a100          # -> ~/.config/snakemake/slurm/config.yaml

(`make preflight` and `make slurm-profile` call these.) `check` passes its arguments to
`snakemake --dry-run` (nothing is submitted) run from the current directory, prints the effective
cluster settings and, per rule, the sbatch options the executor plugin builds from each job's resources,
then stops with exit status 1 and one message per problem when

- a value is still a placeholder of profiles/slurm/config.yaml (`EDIT_...`);
- a partition does not exist or a GPU job's partition has no GPUs of the requested model (`sinfo`);
- an account is not one of the user's associations (`sacctmgr`);
- the plugin would poll job states with `sacct` where SLURM accounting is disabled (the run would hang
  forever after submitting its first jobs), also through the plugin's silent fallback from `squeue` to
  `sacct` when MinJobAge < 3 x slurm-init-seconds-before-status-checks (`scontrol show config`).

A check whose SLURM tool is not installed is reported as skipped, never as passed. `write-profile`
fills the four placeholders of profiles/slurm/config.yaml and writes the result where Snakemake looks
for `--profile slurm` (its user configuration directory, honouring $XDG_CONFIG_HOME).

The dry-run parser (`parse_run`) is also what tests/test_slurm_cluster.py uses to read a real run.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..common.errors import InputError

PLACEHOLDER = re.compile(r"EDIT_\w+")
TEMPLATE = Path(__file__).resolve().parents[2] / "profiles" / "slurm" / "config.yaml"
# The placeholders of the template and the write-profile option that fills each.
PLACEHOLDER_OPTIONS = {
    "EDIT_cpu_partition": "partition",
    "EDIT_gpu_partition": "gpu_partition",
    "EDIT_account": "account",
    "EDIT_gpu_model": "gpu_model",
}
ACCOUNTING_DISABLED = "accounting_storage/none"


# --------------------------------------------------------------------------- reading `snakemake` output

_HEADER = re.compile(r"^(local)?rule (\w+):$")
_FIELD = re.compile(r"^    (\w+): (.*)$")
_SUBMITTED = re.compile(r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


@dataclass
class Job:
    """One job block of Snakemake's output (the last block wins when a job is retried)."""

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
            if key.strip():
                out[key.strip()] = value.strip()
        return out

    @property
    def gpus(self) -> int:
        return int(self.resources.get("gpu", "0") or 0)

    @property
    def submitted(self) -> bool:
        """Whether a cluster executor submits it: not a local rule, and not an output-less target rule
        such as `all` (Snakemake runs those in the main process; a dry run prints them as `rule`)."""
        return not self.local and bool(self.files("output"))

    @property
    def threads(self) -> int:
        """Snakemake prints `threads:` only above 1."""
        return int(self.fields.get("threads", "1"))


def parse_run(text: str) -> dict[int, Job]:
    """Jobs of one `snakemake` run or dry run by Snakemake job id: the blocks Snakemake prints per job
    (`rule X:` for submitted jobs, `localrule X:` for jobs of the main process), the SLURM plugin's line
    per submission and Snakemake's line per finished job."""
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
        if sub and int(sub.group(1)) in jobs:
            job = jobs[int(sub.group(1))]
            job.slurm_ids.append(int(sub.group(2)))
            job.slurm_logs.append(sub.group(3))
            continue
        fin = _FINISHED.match(line)
        if fin and int(fin.group(1)) in jobs:
            jobs[int(fin.group(1))].finished = True
    close(block)
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


# --------------------------------------------------------------------------- what sbatch is asked for


# resource -> sbatch option, in the plugin's order, for the resources passed through as they are
SIMPLE_OPTIONS = (("slurm_account", "-A "), ("slurm_partition", "-p "), ("runtime", "-t "),
                  ("constraint", "-C "), ("qos", "--qos="))


def sbatch_options(job: Job, requeue: bool = False) -> list[str]:
    """The sbatch options snakemake-executor-plugin-slurm 2.8.0 derives from a job's resources
    (the fixed ones, --job-name, --output, --comment, are left out)."""
    res = job.resources
    opts = [f"{flag}{res[key]}" for key, flag in SIMPLE_OPTIONS if res.get(key)]
    if res.get("mem_mb_per_cpu"):
        opts.append(f"--mem-per-cpu {res['mem_mb_per_cpu']}")
    elif res.get("mem_mb"):
        opts.append(f"--mem {res['mem_mb']}")
    if requeue:
        opts.append("--requeue")
    if res.get("cpus_per_gpu") and job.gpus:
        opts.append(f"--cpus-per-gpu={res['cpus_per_gpu']}")
    else:
        opts.append(f"--cpus-per-task={res.get('cpus_per_task') or job.threads}")
    if res.get("gres"):
        opts.append(f"--gres={res['gres']}")
    elif job.gpus:
        model = res.get("gpu_model", "")
        opts.append(f"--gpus={model}:{job.gpus}" if model else f"--gpus={job.gpus}")
    return opts


def request_table(jobs: Iterable[Job], requeue: bool = False) -> list[tuple[str, int, str]]:
    """(rule, number of jobs, sbatch options) per distinct request of a submitted rule."""
    counts: dict[tuple[str, str], int] = {}
    for job in jobs:
        if not job.submitted:
            continue
        key = (job.rule, " ".join(sbatch_options(job, requeue)))
        counts[key] = counts.get(key, 0) + 1
    return sorted((rule, n, opts) for (rule, opts), n in counts.items())


# --------------------------------------------------------------------------- the site's answers

# A runner executes a SLURM command and returns (exit status, stdout + stderr), or None when the
# command is not installed. Tests pass fake ones.
Runner = Callable[[Sequence[str]], "tuple[int, str] | None"]


def run_tool(cmd: Sequence[str]) -> tuple[int, str] | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(cmd)}: no answer within 60 s"
    return proc.returncode, proc.stdout + proc.stderr


def site_partitions(run: Runner) -> dict[str, set[str]] | None:
    """Partition -> GPU models found in its nodes' GRES ('' for GPUs without a type), from sinfo."""
    out = run(["sinfo", "-h", "-o", "%R|%G"])
    if out is None:
        return None
    rc, text = out
    if rc != 0:
        raise InputError(f"sinfo failed (exit {rc}): {text.strip()}")
    parts: dict[str, set[str]] = {}
    for line in text.splitlines():
        if "|" not in line:
            continue
        name, gres = line.split("|", 1)
        models = parts.setdefault(name.strip(), set())
        for item in gres.split(","):
            bits = re.sub(r"\(.*?\)", "", item.strip()).split(":")   # gpu:a100:4(S:0-1) -> gpu a100 4
            if bits[0] == "gpu":
                models.add(bits[1] if len(bits) == 3 else "")
    return parts


def site_accounts(run: Runner, user: str) -> set[str] | None:
    """The user's accounts (sacctmgr), or None where sacctmgr is missing or accounting is off."""
    out = run(["sacctmgr", "-n", "-P", "show", "associations", f"user={user}", "format=account"])
    if out is None or out[0] != 0:
        return None
    return {line.strip() for line in out[1].splitlines() if line.strip()}


def site_config(run: Runner) -> dict[str, str] | None:
    """`scontrol show config` as a dict (AccountingStorageType, MinJobAge...)."""
    out = run(["scontrol", "show", "config"])
    if out is None or out[0] != 0:
        return None
    conf = {}
    for line in out[1].splitlines():
        key, sep, value = line.partition("=")
        if sep:
            conf[key.strip()] = value.strip()
    return conf


def _seconds(value: str) -> int | None:
    m = re.fullmatch(r"(\d+)\s*(s|sec|secs|seconds)?", value.strip())
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------- checks


@dataclass
class Settings:
    """The effective run settings that matter here (after all profiles and flags)."""

    executor: str | None
    jobs: int | None
    latency_wait: int | None
    retries: int | None
    keep_going: bool | None
    requeue: bool | None
    status_command: str | None
    init_seconds: int | None
    profile_files: list[Path] = field(default_factory=list)


@dataclass
class Report:
    ok: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _files_with(text: str, files: Iterable[Path]) -> str:
    hits = [str(f) for f in files if f.is_file() and text in f.read_text(encoding="utf-8")]
    return " and ".join(hits) if hits else "the command line"


def check(settings: Settings, jobs: Sequence[Job], run: Runner, user: str) -> Report:
    rep = Report()
    submitted = [j for j in jobs if j.submitted]
    if settings.executor != "slurm":
        rep.problems.append(f"the effective executor is {settings.executor or 'local'!r}, not 'slurm': "
                            "name the cluster profile (--profile slurm or --profile profiles/slurm)")
        return rep

    # placeholders: in any resource of any job
    seen: dict[str, dict[str, set[str]]] = {}
    all_rules = {j.rule for j in submitted}
    for job in submitted:
        for key, value in job.resources.items():
            for ph in PLACEHOLDER.findall(value):
                seen.setdefault(ph, {}).setdefault(key, set()).add(job.rule)
    for ph, keys in sorted(seen.items()):
        where = "; ".join(f"{key} of {'every rule' if rules == all_rules else 'rules ' + ', '.join(sorted(rules))}"
                          for key, rules in sorted(keys.items()))
        rep.problems.append(f"{ph} is still a placeholder ({where}), set in "
                            f"{_files_with(ph, settings.profile_files)}: run `make slurm-profile ...` "
                            "or replace it with your site's value")
    if seen:
        return rep  # the site checks below would only repeat the placeholders

    parts = site_partitions(run)
    wanted = sorted({(j.resources.get("slurm_partition", ""), j.gpus > 0, j.resources.get("gpu_model", ""), j.rule)
                     for j in submitted})
    if parts is None:
        rep.skipped.append("partitions and GPU models: sinfo not found")
    else:
        bad = 0
        for partition, gpu, model, rule in wanted:
            if not partition:
                continue  # the site's default partition
            if partition not in parts:
                rep.problems.append(f"partition {partition!r} (rule {rule}) does not exist; sinfo lists: "
                                    f"{', '.join(sorted(parts)) or 'none'}")
                bad += 1
            elif gpu and not parts[partition]:
                rep.problems.append(f"partition {partition!r} (GPU rule {rule}) has no GPUs in its nodes' GRES")
                bad += 1
            elif gpu and model and model not in parts[partition]:
                rep.problems.append(f"partition {partition!r} has no GPUs of model {model!r} (rule {rule}); "
                                    f"its GRES lists: {', '.join(sorted(m or '<untyped>' for m in parts[partition]))}")
                bad += 1
        if not bad:
            rep.ok.append("partitions: " + (", ".join(sorted({w[0] for w in wanted if w[0]})) or "site default")
                          + " exist (sinfo)")

    accounts = sorted({j.resources["slurm_account"] for j in submitted if j.resources.get("slurm_account")})
    if accounts:
        known = site_accounts(run, user)
        if known is None:
            rep.skipped.append(f"accounts {', '.join(accounts)}: sacctmgr not found or accounting disabled")
        else:
            missing = [a for a in accounts if a not in known]
            for a in missing:
                rep.problems.append(f"account {a!r} is not one of {user}'s accounts (sacctmgr lists: "
                                    f"{', '.join(sorted(known)) or 'none'}); set slurm_account in "
                                    f"{_files_with(a, settings.profile_files)}")
            if not missing:
                rep.ok.append(f"accounts: {', '.join(accounts)} (sacctmgr)")

    conf = site_config(run)
    status = settings.status_command or "sacct"
    if conf is None:
        rep.skipped.append(f"job status command {status}: scontrol not found")
        return rep
    disabled = conf.get("AccountingStorageType", "") == ACCOUNTING_DISABLED
    min_age = _seconds(conf.get("MinJobAge", ""))
    init = settings.init_seconds if settings.init_seconds is not None else 40
    where = _files_with("slurm-status-command", settings.profile_files)
    if status == "sacct" and disabled:
        rep.problems.append(f"slurm-status-command: sacct (in {where}) on a cluster without accounting "
                            f"(AccountingStorageType={ACCOUNTING_DISABLED}): the run would hang after its first "
                            "jobs; set slurm-status-command: squeue")
    elif status == "squeue" and (min_age is None or min_age < 3 * init):
        msg = (f"slurm-status-command: squeue needs MinJobAge >= 3 x slurm-init-seconds-before-status-checks "
               f"= {3 * init} s, the cluster has MinJobAge={conf.get('MinJobAge', '?')}: the plugin falls back "
               "to sacct")
        if disabled:
            rep.problems.append(msg + ", and accounting is disabled: the run would hang; lower "
                                      "slurm-init-seconds-before-status-checks")
        else:
            rep.skipped.append(msg)
    else:
        rep.ok.append(f"job status command {status} (accounting {'disabled' if disabled else 'enabled'}, "
                      f"MinJobAge={conf.get('MinJobAge', '?')})")
    return rep


# --------------------------------------------------------------------------- settings and dry run


def effective_settings(snakemake_args: Sequence[str]) -> Settings:
    """What Snakemake resolves from the profiles (named, $SNAKEMAKE_PROFILE, profiles/default) and flags,
    read with Snakemake's own argument parser from the current directory."""
    import contextlib
    import io

    from snakemake.cli import get_profile_dir, parse_args

    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            _, args = parse_args(list(snakemake_args))
        except SystemExit as exc:
            said = "\n".join(line for line in err.getvalue().splitlines() if not line.startswith("Using "))
            hint = ("\n(write the profile first: make slurm-profile PARTITION=... GPU_PARTITION=... ACCOUNT=... "
                    "GPU_MODEL=...)" if "profile directory given" in said else "")
            raise InputError(f"snakemake refuses these arguments: {said.strip()}{hint}") from exc
    files = []
    for p in args.profile or []:
        found = get_profile_dir(str(p))
        if found:
            files.append(found[1].expanduser().resolve())
    m = re.search(r"workflow specific profile (\S+) for", err.getvalue())
    if m:
        found = get_profile_dir(m.group(1))
        if found:
            files.append(found[1].resolve())

    def plain(name: str):
        """A setting's value; None where it is unset (plugin settings are dataclass MISSING without one)."""
        value = getattr(args, name, None)
        return value if isinstance(value, (str, int, float, bool)) else None

    return Settings(executor=plain("executor"), jobs=plain("jobs"), latency_wait=plain("latency_wait"),
                    retries=plain("retries"), keep_going=plain("keep_going"), requeue=plain("slurm_requeue"),
                    status_command=plain("slurm_status_command"),
                    init_seconds=plain("slurm_init_seconds_before_status_checks"), profile_files=files)


def dry_run(snakemake_args: Sequence[str]) -> dict[int, Job]:
    proc = subprocess.run([sys.executable, "-m", "snakemake", *snakemake_args, "--dry-run"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise InputError(f"snakemake --dry-run failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return parse_run(proc.stdout + proc.stderr)


def format_settings(s: Settings) -> str:
    where = " + ".join(str(f) for f in s.profile_files) or "no profile"
    return (f"Effective settings ({where}):\n"
            f"  executor {s.executor}, jobs {s.jobs}, latency-wait {s.latency_wait} s, retries {s.retries}, "
            f"keep-going {s.keep_going}, requeue {s.requeue},\n"
            f"  job status command {s.status_command or 'sacct (plugin default)'}, first poll after "
            f"{s.init_seconds if s.init_seconds is not None else 40} s")


def format_requests(jobs: Sequence[Job], requeue: bool) -> str:
    rows = request_table(jobs, requeue)
    width = max([len(r[0]) for r in rows] + [4])
    lines = [f"sbatch requests of the {sum(r[1] for r in rows)} jobs to submit (snakemake --dry-run):",
             f"  {'rule':<{width}}  jobs  sbatch options"]
    lines += [f"  {rule:<{width}}  {n:>4}  {opts}" for rule, n, opts in rows]
    return "\n".join(lines)


def format_report(rep: Report) -> str:
    lines = ["Checks:"]
    lines += [f"  ok    {m}" for m in rep.ok]
    lines += [f"  skip  {m}" for m in rep.skipped]
    lines += [f"  FAIL  {m}" for m in rep.problems]
    return "\n".join(lines)


def run_check(snakemake_args: Sequence[str], run: Runner = run_tool, out=sys.stdout) -> int:
    settings = effective_settings(snakemake_args)
    print(format_settings(settings), file=out)
    jobs = list(dry_run(snakemake_args).values()) if settings.executor == "slurm" else []
    if jobs:
        print(format_requests(jobs, bool(settings.requeue)), file=out)
    rep = check(settings, jobs, run, getpass.getuser())
    print(format_report(rep), file=out)
    if rep.problems:
        print(f"preflight: {len(rep.problems)} problem(s); nothing was submitted", file=out)
        return 1
    print("preflight: ready to submit", file=out)
    return 0


# --------------------------------------------------------------------------- writing the user's profile


def profile_dir(name: str = "slurm") -> Path:
    """Where `snakemake --profile <name>` finds a user's profile (Snakemake's user config directory:
    $XDG_CONFIG_HOME/snakemake or ~/.config/snakemake on Linux)."""
    from snakemake.common import get_appdirs

    return Path(get_appdirs().user_config_dir) / name


def fill_template(template: str, values: dict[str, str | None]) -> str:
    """The template with each placeholder replaced by its value; a None account removes the account line
    (sites without accounts). The EDIT hints in comments go too."""
    out = []
    for line in template.splitlines(keepends=True):
        found = PLACEHOLDER.findall(line)
        for ph in found:
            if ph not in values:
                raise InputError(f"{TEMPLATE}: unknown placeholder {ph}")
            if values[ph] is None:
                line = ""
                break
            line = line.replace(f'"{ph}"', _yaml_str(values[ph])).replace(ph, values[ph])
        if found and line:
            line = re.sub(r"\s*# EDIT.*$", "", line.rstrip("\n")) + "\n"
        out.append(line)
    return "".join(out)


def _yaml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_profile(partition: str, gpu_partition: str, account: str | None, gpu_model: str,
                  status_command: str | None = None, name: str = "slurm", force: bool = False,
                  template: Path = TEMPLATE) -> Path:
    for option, value in (("PARTITION", partition), ("GPU_PARTITION", gpu_partition)):
        if not value or not re.fullmatch(r"[\w.-]+", value):
            raise InputError(f"{option}={value!r}: give the partition's name (sinfo -s lists them)")
    if account is not None and not re.fullmatch(r"[\w.-]*", account):
        raise InputError(f"ACCOUNT={account!r} is not an account name")
    if not re.fullmatch(r"[\w.-]*", gpu_model):
        raise InputError(f"GPU_MODEL={gpu_model!r}: the model part of gpu:<model>:N in sinfo -o %G, or empty")
    text = fill_template(template.read_text(encoding="utf-8"), {
        "EDIT_cpu_partition": partition, "EDIT_gpu_partition": gpu_partition,
        "EDIT_account": account or None, "EDIT_gpu_model": gpu_model})
    if status_command is not None:
        if status_command not in ("sacct", "squeue"):
            raise InputError(f"STATUS={status_command!r}: use sacct or squeue")
        text, n = re.subn(r"(?m)^slurm-status-command: \w+", f"slurm-status-command: {status_command}", text)
        if n != 1:
            raise InputError(f"{template}: no slurm-status-command line to set")
    dest = profile_dir(name) / "config.yaml"
    if dest.exists() and dest.read_text(encoding="utf-8") != text and not force:
        raise InputError(f"{dest} exists with other values; add FORCE=1 (--force) to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="dry run with the cluster profile, print sbatch requests, check the site",
                       description="All arguments go to `snakemake --dry-run`, e.g. --profile slurm "
                                   "--configfile my_cluster.yaml [targets].")
    c.add_argument("snakemake_args", nargs="*", metavar="SNAKEMAKE_ARG")
    w = sub.add_parser("write-profile", help="fill profiles/slurm's placeholders into Snakemake's profile directory")
    w.add_argument("--partition", required=True, help="partition for CPU jobs (sinfo -s)")
    w.add_argument("--gpu-partition", required=True, help="partition for GPU jobs (sinfo -o '%%P %%G')")
    w.add_argument("--account", default="", help="account to charge; empty: the site has none (line removed)")
    w.add_argument("--gpu-model", default="", help="GPU model, e.g. a100; empty: any GPU")
    w.add_argument("--status-command", choices=("sacct", "squeue"),
                   help="override slurm-status-command (squeue where SLURM accounting is disabled)")
    w.add_argument("--name", default="slurm", help="profile name (default slurm: --profile slurm)")
    w.add_argument("--force", action="store_true", help="replace an existing profile with other values")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"] and not {"-h", "--help"} & set(argv[1:]):
        try:        # everything after `check` is Snakemake's, options included
            return run_check([a for a in argv[1:] if a != "--"])
        except InputError as exc:
            print(f"preflight: {exc}", file=sys.stderr)
            return 1
    args = parser.parse_args(argv)
    try:
        if args.command == "write-profile":
            dest = write_profile(args.partition, args.gpu_partition, args.account or None, args.gpu_model,
                                 args.status_command, args.name, args.force)
            print(f"wrote {dest}\nnext: make preflight ARGS=\"--configfile <your config>\", "
                  f"then snakemake --profile {args.name} --configfile <your config>")
            return 0
        return run_check(args.snakemake_args)
    except InputError as exc:
        print(f"preflight: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
