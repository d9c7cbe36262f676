"""Benchmark: feature extraction once vs the whole cached fine-tune sweep vs one Cs end-to-end.

Named baseline, measured in the same run: one backbone pass = extracting the frozen towers'
features of every training image and caption once (rule extract_features, views = 1). The original
re-runs the towers on every image of every epoch of every fine-tune (10 epochs x 5 Cs = 50 passes per
strategy and seed); the cached mode pays one pass for the whole sweep. Target: the whole cached sweep
(Cs x strategies x seeds, 10 epochs each) <= 1.5 backbone passes, and the extraction cost does not
depend on how many Cs, strategies or seeds there are.

Both sides use the whole machine the way the workflow does (imports and process start-up excluded,
for both): the extraction in one process with the rule's 2 threads; the sweep as `snakemake --cores 2`
runs the finetune rule (threads: 1), i.e. 2 fine-tunes at a time in 2 worker processes of 1 thread.
For reference it also times the sweep one fine-tune at a time in this process with --threads threads.

    python bench/finetune_sweep.py [--config config.yaml] [--checkpoint results/pretrain/clip/checkpoint.pt]
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflow_scripts.finetune import train as finetune  # noqa: E402
from workflow_scripts.misalign import similarity, swap  # noqa: E402
from workflow_scripts.models.checkpoints import save_checkpoint  # noqa: E402
from workflow_scripts.common.config import format_cs, load_config  # noqa: E402
from workflow_scripts.finetune.features import extract, load_feature_cache  # noqa: E402
from workflow_scripts.common.io import setup_logging  # noqa: E402
from workflow_scripts.models.clip import build_model  # noqa: E402
from workflow_scripts.world.synthetic import generate_world  # noqa: E402


def _worker_init(threads: int) -> None:
    """A sweep worker: the rule's thread count, imports done before the clock starts."""
    torch.set_num_threads(threads)
    setup_logging()


def _ready(_: int) -> None:
    time.sleep(0.5)   # holds a worker, so that every worker runs one of these before the clock starts


def _finetune(job: tuple) -> None:
    finetune.run(*job)


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def arithmetic(spec: dict, n_images: int, n_texts: int, steps: int, batch: int) -> tuple[float, float]:
    """(extraction, sweep) floating-point operations, counted by torch's FlopCounterMode on one batch
    of the towers and one fine-tune step: what the two sides cost at equal arithmetic efficiency."""
    from workflow_scripts.models.clip import (
        Head, get_tokenizer, image_features, preprocess_config, text_features,
    )

    model = build_model(spec["arch"]).eval()
    size = preprocess_config(model, spec)["image_size"]
    images = torch.zeros(8, 3, size, size)
    tokens = get_tokenizer(spec["arch"])(["a photo of a red circle"] * 8)
    with torch.no_grad():
        per_image = _flops(lambda: image_features(model, images)) / 8
        per_text = _flops(lambda: text_features(model, tokens)) / 8
        head = Head.from_model(model)
        fi, ft = torch.randn(batch, head.image.in_features), torch.randn(batch, head.text.in_features)
    for p in head.parameters:
        p.requires_grad_(True)

    def step():   # forward and backward; the optimizer update is elementwise, not counted
        finetune.clip_loss(head.image(fi), head.text(ft), 14.3)[0].backward()

    per_step = _flops(step)
    return per_image * n_images + per_text * n_texts, per_step * steps


def timed_sweep(jobs: list[tuple], workers: int, threads: int) -> float:
    """Wall time of running every fine-tune job, `workers` at a time in processes of `threads` threads."""
    with mp.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(threads,)) as pool:
        pool.map(_ready, range(workers), chunksize=1)
        t0 = time.perf_counter()
        pool.map(_finetune, jobs, chunksize=1)
        return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml", help="embedded config (world, misalign, finetune)")
    parser.add_argument("--model", default="clip")
    parser.add_argument("--checkpoint", help="pretrained checkpoint (default: a seeded random init of the arch)")
    parser.add_argument("--threads", type=int, default=2, help="cores of the machine = the extraction rule's threads")
    parser.add_argument("--job-threads", type=int, default=1, help="the finetune rule's threads")
    parser.add_argument("--sequential", action="store_true", help="also time the sweep one job at a time")
    parser.add_argument("--arch", help="another architecture for the model (e.g. ViT-B-16-laclip, random init)")
    parser.add_argument("--n-train", type=int, help="training pairs (default: world.n_train of the config)")
    parser.add_argument("--skip-end2end", action="store_true", help="do not time the end-to-end fine-tune")
    args = parser.parse_args()
    workers = max(1, args.threads // args.job_threads)
    setup_logging()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    spec = dict(cfg["models"][args.model], **({"arch": args.arch} if args.arch else {}))
    if args.n_train:
        cfg["world"]["n_train"] = args.n_train
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        w = cfg["world"]
        generate_world(tmp / "world", w["seed"], w["n_train"], 10, w["image_size"], 0, w["max_caption_words"],
                       sets=[])
        cfg = copy.deepcopy(cfg)
        cfg["data"].update(train_csv=str(tmp / "world/train.csv"), image_root=str(tmp / "world"),
                           captions=str(tmp / "world/captions.txt"), rewrites=[])
        cfg["compute"]["device"] = "cpu"
        # only the benchmarked model (the embedded laclip would need the rewrite files, not generated here)
        cfg["models"] = {args.model: spec}
        cfg["finetune"]["models"] = [args.model]
        cfg["evaluate"]["pruning"]["models"] = [args.model]
        cfg_path = tmp / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        ckpt = args.checkpoint
        if ckpt is None:
            torch.manual_seed(0)
            ckpt = str(tmp / "pretrained.pt")
            save_checkpoint(ckpt, build_model(spec["arch"]).state_dict(), epoch=0, meta={"arch": spec["arch"]})

        # Stage 1 (not part of the comparison): neighbours, swaps and CSVs for every (strategy, Cs).
        t0 = time.perf_counter()
        nbrs = tmp / "neighbours.npz"
        similarity.main(["--config", str(cfg_path), "--captions", cfg["data"]["captions"], "--out", str(nbrs)])
        csvs = {}
        for strategy in cfg["misalign"]["strategies"]:
            labels = [format_cs(c) for c in cfg["misalign"]["cs_values"]]
            caps = [str(tmp / f"{strategy}_{c}.txt") for c in labels]
            swap.main(["swap", "--config", str(cfg_path), "--captions", cfg["data"]["captions"],
                           "--neighbours", str(nbrs), "--strategy", strategy, "--cs", *labels,
                           "--out-captions", *caps, "--out-manifest", *[c + ".parquet" for c in caps]])
            for label, cap in zip(labels, caps):
                csvs[(strategy, label)] = str(tmp / f"{strategy}_{label}.csv")
                swap.main(["assemble", "--train-csv", cfg["data"]["train_csv"], "--captions", cap,
                               "--out", csvs[(strategy, label)]])
        stage1 = time.perf_counter() - t0

        # Baseline: one backbone pass (the feature cache with views = 1).
        cfg["finetune"]["views"], cfg["finetune"]["augment"] = 1, False
        cache = str(tmp / "features.npz")
        t0 = time.perf_counter()
        extract(cfg, args.model, ckpt, cache)
        backbone = time.perf_counter() - t0
        n_texts = len(load_feature_cache(cache)["texts"])

        # Ours: the whole sweep from the cache, as the workflow runs it.
        ft = cfg["finetune"]
        cached_cfg = {**cfg, "finetune": {**ft, "mode": "cached"}}
        jobs = [(cached_cfg, args.model, strategy, float(label), seed, ckpt, csv, cache,
                 str(tmp / "ft" / f"{strategy}_{label}_{seed}"))
                for (strategy, label), csv in csvs.items() for seed in ft["seeds"]]
        runs = len(jobs)
        sweep = timed_sweep(jobs, workers, args.job_threads)
        sequential = None
        if args.sequential:
            t0 = time.perf_counter()
            for job in jobs:
                finetune.run(*job[:-1], str(tmp / "ft_seq" / Path(job[-1]).name))
            sequential = time.perf_counter() - t0

        # The original's way for one (strategy, Cs, seed): the towers run on every batch of every epoch.
        end2end = None
        if not args.skip_end2end:
            strategy, label = next(iter(csvs))
            t0 = time.perf_counter()
            finetune.run({**cfg, "finetune": {**ft, "mode": "end2end"}}, args.model, strategy, float(label),
                         ft["seeds"][0], ckpt, csvs[(strategy, label)], None, str(tmp / "e2e"))
            end2end = time.perf_counter() - t0

    n = cfg["world"]["n_train"]
    steps = runs * ft["epochs"] * (n // ft["batch_size"])
    flops_extract, flops_sweep = arithmetic(spec, n, n_texts, steps, ft["batch_size"])
    print(f"\n{n} training pairs, model {spec['arch']}, {ft['epochs']} epochs, batch {ft['batch_size']}, "
          f"{args.threads} threads; stage 1 (not compared) took {stage1:.1f} s")
    print(f"baseline  one backbone pass (feature extraction, views 1, {args.threads} threads): "
          f"{backbone:8.2f} s = 1.00 passes")
    print(f"ours      whole cached sweep, {runs} fine-tunes, {workers} at a time x {args.job_threads} thread: "
          f"{sweep:8.2f} s = {sweep / backbone:.2f} passes  (target <= 1.5)")
    if sequential is not None:
        print(f"          the same sweep one fine-tune at a time, {args.threads} threads:  {sequential:8.2f} s = "
              f"{sequential / backbone:.2f} passes")
    print(f"arithmetic (torch FlopCounterMode): extraction {flops_extract / 1e9:.1f} GFLOP, sweep "
          f"{flops_sweep / 1e9:.1f} GFLOP ({steps} steps) = {flops_sweep / flops_extract:.2f} passes at equal "
          f"efficiency; measured rates: extraction {flops_extract / backbone / 1e9:.1f} GFLOP/s, sweep "
          f"{flops_sweep / sweep / 1e9:.1f} GFLOP/s")
    if end2end is not None:
        print(f"original  one fine-tune end-to-end (towers every step):       {end2end:8.2f} s = "
              f"{end2end / backbone:.2f} passes; the sweep this way: ~{runs * end2end / backbone:.0f} passes")
        print(f"ratio     end-to-end sweep (estimated) / cached sweep incl. extraction = "
              f"{runs * end2end / (sweep + backbone):.0f}x")
    return 0 if sweep / backbone <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
