"""Evaluation features with and without the feature cache for the training pairs (data.heldout_csv unset).

Builds the real-format data set (tests/realdata.py: photos and text shipped with the installed packages),
imports a seeded fp-tiny-vit checkpoint, makes the model's feature cache as the pipeline does
(features.extract), then times `evaluate.extract_eval_features` — the body of the eval_features job —
alternately as the baseline (the training pairs encoded again: the code path before the cache was reused,
still the fallback) and with the cache. Prints the medians and their ratio.

    python bench/eval_pairs_reuse.py --n-train 1024 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--n-eval", type=int, default=25, help="images per class per evaluation set (4 classes, 2 sets)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--arch", default="fp-tiny-vit", help="open_clip architecture (randomly initialised, seeded)")
    args = ap.parse_args(argv)

    import torch

    from realdata import build, example_config, write_checkpoints
    from workflow_scripts.common.config import load_config
    from workflow_scripts.evaluate.run import extract_eval_features
    from workflow_scripts.finetune.features import extract

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = build(tmp / "data", n_train=args.n_train, n_heldout=8, n_eval=args.n_eval, checkpoints=False)
        data["checkpoints"] = write_checkpoints(tmp / "checkpoints", args.arch)
        raw = example_config(data)
        raw["models"]["clip"].update(checkpoint=data["checkpoints"]["clip"], arch=args.arch)
        (tmp / "config.yaml").write_text(yaml.safe_dump(raw))
        config = load_config(tmp / "config.yaml")
        index = str(tmp / "features" / "train.npz")
        extract(config, "clip", data["checkpoints"]["clip"], index)
        times: dict[str, list[float]] = {"baseline: pairs encoded": [], "pairs from the feature cache": []}
        for _ in range(args.repeats):
            for (label, cache) in zip(times, (None, index)):
                start = time.perf_counter()
                out = extract_eval_features(config, "clip", data["checkpoints"]["clip"], feature_cache=cache)
                times[label].append(time.perf_counter() - start)
        n_pairs = len(out["train_pairs::image"])
    base, reuse = (statistics.median(t) for t in times.values())
    print(f"{args.arch}, {n_pairs} training pairs, 2 x {4 * args.n_eval} evaluation images, 1 thread, "
          f"median of {args.repeats}:")
    for label, t in times.items():
        print(f"  {label:32s} {statistics.median(t):6.2f} s  ({', '.join(f'{x:.2f}' for x in t)})")
    print(f"  ratio baseline / cache: {base / reuse:.2f}x  (saved {base - reuse:.2f} s per model)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
