"""GPU check: the workflow's GPU code paths against their CPU counterparts, on one GPU machine.

    python bench/gpu_check.py            # or: make gpu-check; about 2-4 minutes on one modern GPU

Needs a CUDA GPU visible to torch and CuPy (pip install -r envs/requirements-gpu.txt). Downloads
nothing. Without a GPU it stops at once with exit status 2 and says so: nothing is measured on CPU and
presented as a GPU result, and no step falls back to the CPU (the GPU runs use compute.device: cuda with
compute.allow_cpu_fallback: false, and the neighbour search calls the CuPy backend directly).

What it runs and prints (exit status 1 if a comparison fails):

1. Neighbour lists: TF-IDF of >= 100,000 real English texts (the WordNet glosses of bench/similarity.py
   when /usr/share/wordnet exists, else docstring/comment lines of the installed Python packages, which
   it labels as such), top-10 exact neighbours with the CuPy backend and with the CPU backend: both
   times, and whether the lists are identical (they must be).
2. The workflow on a small synthetic world (tests/config/test.yaml, one model, fine-tune mode end2end)
   run on the GPU (CuPy neighbours, pretraining, frozen towers under fp16 autocast, fine-tune), then the
   same jobs redone on the CPU in a copy of that run directory from the same pretrained checkpoint:
   - frozen towers: max abs difference of the evaluation features, fp16 autocast (GPU) vs float32 (CPU),
     and the zero-shot top-1 accuracy of both per evaluation set;
   - the end2end fine-tune (towers in the loop): max abs difference of the projections and final loss;
   - the neighbour file of the GPU run against the CPU run's (identical).
3. The fine-tune's optimizer (workflow_scripts/finetune/adamw.py, torch's functional AdamW update) against
   torch.optim.AdamW on CUDA, where torch picks its foreach kernels for both: identical parameters
   after every one of 25 steps.
4. NCCL: with >= 2 GPUs the fine-tune again with finetune.gpus: 2 (torchrun, 2 processes, NCCL), its
   projections against the 1-GPU run and the backend named in its log; with one GPU it says skipped.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

NO_GPU = 2                      # exit status: no GPU here, nothing measured
MODEL, STRATEGY, CS, SEED = "clip", "similarity", "0.5", "0"
FINETUNE = f"results/finetune/{MODEL}/{STRATEGY}/Cs{CS}/seed{SEED}/projections.npz"
TARGETS = [f"results/eval/pretrained/{MODEL}/metrics.parquet", FINETUNE, "results/misalign/tfidf_neighbours.npz"]
# Tolerances of the GPU-vs-CPU comparisons (fp16 autocast has ~3 significant digits).
TOWER_ATOL = 5e-2               # max abs difference of L2-normalised tower features
ACC_ATOL = 0.05                 # zero-shot top-1 difference
PROJ_RTOL = 0.05                # end2end projections: max abs diff relative to max abs value


class Check:
    def __init__(self):
        self.failures: list[str] = []

    def expect(self, ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            self.failures.append(what)


def require_gpu() -> int:
    """The number of GPUs torch and CuPy see; exits with NO_GPU (and the reason) when there is none."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        print(f"gpu_check: torch finds no CUDA GPU (CUDA_VISIBLE_DEVICES={visible}); this check runs only on a "
              "GPU machine. Nothing was measured.", file=sys.stderr)
        sys.exit(NO_GPU)
    try:
        import cupy

        n_cupy = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # ImportError, or a CUDA runtime error from CuPy
        print(f"gpu_check: CuPy is not usable ({exc}); pip install -r envs/requirements-gpu.txt. "
              "Nothing was measured.", file=sys.stderr)
        sys.exit(NO_GPU)
    n = torch.cuda.device_count()
    print(f"GPUs: {n} x {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda}; "
          f"CuPy {cupy.__version__} sees {n_cupy})", flush=True)
    return n


# --------------------------------------------------------------------------- 1. neighbour lists


def real_texts(n: int) -> tuple[list[str], str]:
    """n real English texts without downloading anything (bench/similarity.py's corpora)."""
    import glob

    from similarity import WORDNET, fallback_texts, wordnet_texts

    if glob.glob(str(WORDNET / "data.*")):
        defs, examples = wordnet_texts()
        texts, name = defs + examples, "WordNet glosses"
    else:
        texts, name = fallback_texts(limit=max(n, 400_000)), "Python docstring/comment lines (no WordNet here)"
    if len(texts) < n:
        raise SystemExit(f"gpu_check: only {len(texts)} texts in {name}, fewer than --n-texts {n}")
    return texts[:n], name


def check_neighbours(n: int, threads: int, check: Check) -> None:
    from similarity import tfidf_params

    from workflow_scripts.misalign.captions import normalise_all
    from workflow_scripts.misalign.similarity import neighbours
    from workflow_scripts.misalign.tfidf import tfidf_matrix

    texts, name = real_texts(n)
    print(f"\n1. Neighbour lists, {n} texts ({name}), top-10", flush=True)
    t = time.perf_counter()
    X = tfidf_matrix(normalise_all(texts), tfidf_params())
    print(f"  TF-IDF (CPU, shared): {time.perf_counter() - t:.1f} s, {X.shape[1]} terms, {X.nnz} non-zeros")
    neighbours(X[:2000], 10, backend="cupy")            # CuPy kernels compiled outside the timing
    neighbours(X[:2000], 10, backend="cpu", threads=threads)   # numba JIT likewise
    t = time.perf_counter()
    ids_gpu, scores_gpu, stats = neighbours(X, 10, backend="cupy", threads=threads)
    t_gpu = time.perf_counter() - t
    t = time.perf_counter()
    ids_cpu, scores_cpu, _ = neighbours(X, 10, backend="cpu", threads=threads)
    t_cpu = time.perf_counter() - t
    print(f"  CuPy backend: {t_gpu:.2f} s (unproven rows per round {stats['unproven']}, exact-search rows "
          f"{stats['exact_rows']}); CPU backend ({threads} threads): {t_cpu:.2f} s; ratio {t_cpu / t_gpu:.1f}x")
    same = int((ids_gpu == ids_cpu).all(axis=1).sum())
    check.expect(same == n, f"neighbour lists identical: {same} of {n} rows")
    check.expect(np.allclose(scores_gpu, scores_cpu, rtol=0, atol=1e-6),
                 f"scores agree: max abs diff {np.abs(scores_gpu - scores_cpu).max():.2e}")


# --------------------------------------------------------------------------- 2./3. the workflow


def run_config(base: dict, gpu: bool, gpus: int = 1) -> dict:
    cfg = copy.deepcopy(base)
    cfg["finetune"].update({"models": [MODEL], "mode": "end2end", "seeds": [int(SEED)], "gpus": gpus if gpu else 0})
    cfg["misalign"].update({"strategies": [STRATEGY], "cs_values": [float(CS)], "backend": "cupy" if gpu else "cpu"})
    cfg["evaluate"]["pruning"]["models"] = []
    cfg["compute"] = {**cfg.get("compute", {}), "device": "cuda" if gpu else "cpu", "allow_cpu_fallback": False}
    return cfg


def snakemake(run_dir: Path, cfg: dict, cores: int, *extra: str) -> float:
    (run_dir / "check.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    cmd = [sys.executable, "-m", "snakemake", *TARGETS, *extra, "--snakefile", str(REPO / "Snakefile"),
           "--cores", str(cores), "--configfile", "check.yaml"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t
    (run_dir / "snakemake.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        print((proc.stdout + proc.stderr)[-5000:], file=sys.stderr)
        raise SystemExit(f"gpu_check: snakemake failed in {run_dir} (log: {run_dir / 'snakemake.log'})")
    return elapsed


def npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def top1(run_dir: Path) -> dict[str, float]:
    import pandas as pd

    df = pd.read_parquet(run_dir / f"results/eval/pretrained/{MODEL}/metrics.parquet")   # set, metric, value
    acc = df[df["metric"] == "acc1"]
    return {str(s): float(v) for s, v in zip(acc["set"], acc["value"])}


def final_loss(run_dir: Path) -> float:
    lines = (run_dir / FINETUNE.replace("projections.npz", "log.jsonl")).read_text().splitlines()
    return float(json.loads(lines[-1])["loss"])


def logs_text(run_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in (run_dir / "logs").rglob("*.log"))


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, str]:
    worst, key = 0.0, ""
    for k in a:
        if np.issubdtype(a[k].dtype, np.floating):
            d = float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max()) if a[k].size else 0.0
            if d >= worst:
                worst, key = d, k
    return worst, key


def check_workflow(work: Path, n_gpus: int, cores: int, check: Check) -> None:
    base = yaml.safe_load((REPO / "tests/config/test.yaml").read_text())
    gpu_dir, cpu_dir = work / "gpu", work / "cpu"
    gpu_dir.mkdir(parents=True)
    print("\n2. The workflow on the GPU, then the same jobs on the CPU from the same pretrained checkpoint",
          flush=True)
    t_gpu = snakemake(gpu_dir, run_config(base, gpu=True), cores)
    logs = logs_text(gpu_dir)
    check.expect("falling back to CPU" not in logs, "no GPU job fell back to the CPU")
    shutil.copytree(gpu_dir, cpu_dir, symlinks=True)
    t_cpu = snakemake(cpu_dir, run_config(base, gpu=False), cores,
                      "--forcerun", "caption_neighbours", "eval_features", "finetune")
    print(f"  GPU run {t_gpu:.0f} s (all jobs), CPU redo {t_cpu:.0f} s (neighbours, towers, fine-tune and after)")

    g = npz(gpu_dir / f"results/eval/features/{MODEL}.npz")
    c = npz(cpu_dir / f"results/eval/features/{MODEL}.npz")
    diff, key = max_abs_diff(g, c)
    check.expect(set(g) == set(c) and diff <= TOWER_ATOL,
                 f"frozen towers, fp16 autocast (GPU) vs float32 (CPU): max abs diff {diff:.2e} ({key})")
    acc_g, acc_c = top1(gpu_dir), top1(cpu_dir)
    for name in acc_g:
        check.expect(abs(acc_g[name] - acc_c[name]) <= ACC_ATOL,
                     f"zero-shot top-1 on {name}: GPU fp16 {acc_g[name]:.3f}, CPU float32 {acc_c[name]:.3f}")

    pg, pc = npz(gpu_dir / FINETUNE), npz(cpu_dir / FINETUNE)
    diff, key = max_abs_diff(pg, pc)
    scale = max(float(np.abs(v).max()) for v in pc.values())
    finite = all(np.isfinite(v).all() for v in pg.values())
    check.expect(finite and diff <= PROJ_RTOL * scale,
                 f"end2end fine-tune GPU vs CPU: projections max abs diff {diff:.2e} (max |value| {scale:.2e}, "
                 f"{key}); final loss GPU {final_loss(gpu_dir):.4f}, CPU {final_loss(cpu_dir):.4f}")
    ng, nc = npz(gpu_dir / TARGETS[2]), npz(cpu_dir / TARGETS[2])
    check.expect(np.array_equal(ng["ids"], nc["ids"]),
                 "neighbour lists of the workflow run: CuPy identical to CPU")

    print("\n3. NCCL, 2 processes", flush=True)
    if n_gpus < 2:
        print(f"  skipped: {n_gpus} GPU here (needs 2)")
        return
    nccl_dir = work / "nccl"
    shutil.copytree(gpu_dir, nccl_dir, symlinks=True)
    t = snakemake(nccl_dir, run_config(base, gpu=True, gpus=2), cores, "--forcerun", "finetune")
    log = (nccl_dir / f"logs/finetune/{MODEL}/{STRATEGY}/Cs{CS}/seed{SEED}.log").read_text(errors="replace")
    check.expect("(nccl)" in log, "the 2-process fine-tune initialised NCCL (its log names the backend)")
    diff, key = max_abs_diff(npz(nccl_dir / FINETUNE), pg)
    check.expect(diff <= PROJ_RTOL * scale, f"2 GPUs (NCCL) vs 1 GPU: projections max abs diff {diff:.2e} ({key}); "
                                            f"{t:.0f} s")


def check_adamw(check: Check, steps: int = 25, device: str = "cuda") -> None:
    """adamw.AdamW against torch.optim.AdamW on the GPU, step by step, bit for bit (`device` for the
    test of this check itself)."""
    import torch

    from workflow_scripts.finetune.adamw import AdamW

    print(f"\n== fine-tune optimizer on {device}: adamw.AdamW vs torch.optim.AdamW", flush=True)
    g = torch.Generator(device=device).manual_seed(0)
    start = [torch.randn(512, 768, generator=g, device=device), torch.randn(512, 512, generator=g, device=device)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(steps)]
    runs = []
    for make in (lambda ps: torch.optim.AdamW(ps, lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2),
                 lambda ps: AdamW(ps, lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)):
        params = [p.clone().requires_grad_() for p in start]
        opt, trajectory = make(params), []
        for step in range(steps):
            for p, grad in zip(params, grads[step]):
                p.grad = grad.clone()
            lr = 1e-3 * 0.9 ** step
            if isinstance(opt, AdamW):
                opt.lr = lr
            else:
                for group in opt.param_groups:
                    group["lr"] = lr
            opt.step()
            trajectory.append([p.detach().clone() for p in params])
        runs.append(trajectory)
    same = all(torch.equal(a, b) for ref, ours in zip(*runs) for a, b in zip(ref, ours))
    check.expect(same, f"adamw.AdamW equals torch.optim.AdamW on {device} at each of {steps} steps")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Exit status: 0 all checks passed, 1 a check failed, 2 no GPU here.")
    parser.add_argument("--n-texts", type=int, default=120_000, help="texts for the neighbour check (>= 100000)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads of the CPU sides")
    parser.add_argument("--work", type=Path, help="run directories here (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run directories")
    args = parser.parse_args(argv)
    if args.n_texts < 100_000:
        parser.error("--n-texts must be at least 100000")
    n_gpus = require_gpu()
    check = Check()
    t0 = time.perf_counter()
    check_neighbours(args.n_texts, args.threads, check)
    check_adamw(check)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        check_workflow(work, n_gpus, min(args.threads, 8), check)
    finally:
        if args.work is None and not args.keep and not check.failures:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ngpu_check: {len(check.failures)} failed check(s) in {time.perf_counter() - t0:.0f} s"
          + (f"; run directories kept in {work}" if check.failures or args.keep or args.work else ""))
    for f in check.failures:
        print(f"  FAIL {f}")
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
