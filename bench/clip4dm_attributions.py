"""Benchmark: CLIP4DM word attributions, our batched path against an independent one-pair loop written the
way the original runs it.

Baseline (tests/clip4dm_reference.py, which shares no code with workflow_scripts/clip4dm): per pair, the
full prompt tokenised at the full context, one forward through open_clip's own text modules with the kept
blocks' attention made explicit, torch.autograd.grad of the cosine for each kept block (last first), grad * A
averaged over heads and blocks, the EOT row, and the original's word aggregation (space_tokenize /
tokenizer2space walk). Ours: Attributor (batches of similar length cut after their last EOT, one backward
pass per batch, words by clip4dm.words = original), timed with its tokenisation and word walk (a fresh token
table each time) like the loop. Both start from precomputed image embeddings (the
original also re-encodes the image per pair; left out of both, so the ratio is conservative). Measured in the
same run on the same pairs and model; agreement = max |difference| of the word scores (the word lists must be
equal) and of the cosines.

    python bench/clip4dm_attributions.py [--checkpoint results/pretrain/clip/checkpoint.pt] [--pairs 2048]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from clip4dm_reference import TEMPLATE, one_pair  # noqa: E402

from workflow_scripts.clip4dm.attributions import Attributor  # noqa: E402
from workflow_scripts.clip4dm.tower import TextTower  # noqa: E402
from workflow_scripts.models.clip import build_model, get_tokenizer, load_model  # noqa: E402
from workflow_scripts.world.synthetic import training_examples  # noqa: E402

ARCH = "fp-tiny-vit"


def original_loop(model, tokenizer, captions: list[str], images: torch.Tensor):
    """(cosines, [(words, scores)]) of the pairs, one at a time, the original's way."""
    cos, out = [], []
    for caption, image in zip(captions, images):
        c, ws = one_pair(model, tokenizer, image, caption, TEMPLATE)
        cos.append(c)
        out.append(([w for w, _ in ws], np.asarray([s for _, s in ws])))
    return np.asarray(cos), out


def agreement(cos_b, words_b, items, cos_1, loop) -> tuple[float, int]:
    """(max |difference| over words and cosines, number of pairs whose word lists differ)."""
    diff, mismatched = float(np.abs(cos_b[:len(cos_1)] - cos_1).max()), 0
    for item, ours, (words, scores) in zip(items, words_b, loop):
        if list(item.words) != words:
            mismatched += 1
            continue
        if len(scores):
            diff = max(diff, float(np.abs(ours - scores).max()))
    return diff, mismatched


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a pretrained fp-tiny-vit checkpoint (default: a seeded random one)")
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--loop-pairs", type=int, default=256, help="pairs timed in the one-pair loop")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.checkpoint and Path(args.checkpoint).is_file():
        model, source = load_model({"arch": ARCH, "source": "pretrain"}, args.checkpoint), args.checkpoint
    else:
        model, source = build_model(ARCH), "seeded random fp-tiny-vit"
    model = model.eval()
    # the embedded world's training captions, as generate_world(seed=0, n_train=pairs, image_size=16,
    # n_rewrites=0, max_caption_words=20) writes them (no image is saved)
    captions = [c for _, _, c, _ in training_examples(0, args.pairs, 16, 0, 20, 0.1)]
    tower = TextTower.from_model(model)
    tokenizer = get_tokenizer(ARCH)
    images = torch.randn(len(captions), model.text_projection.shape[1])
    batched = Attributor(tower, tokenizer, TEMPLATE, layers=3, batch_size=args.batch_size)
    items = batched.tokenize(captions)
    batched.attribute(items[:64], images[:64])                       # warm-up
    original_loop(model, tokenizer, captions[:4], images[:4])
    n_loop = min(args.loop_pairs, len(items))
    rates = {"batched": {}, "loop": {}}
    attribute_only = {}
    diffs = []
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        t_b, t_a = [], []
        for _ in range(2):
            t0 = time.perf_counter()
            items = batched.tokenize(captions)           # a fresh table: tokenisation and word walk included
            t1 = time.perf_counter()
            cos_b, words_b = batched.attribute(items, images)
            t_b.append(time.perf_counter() - t0)
            t_a.append(time.perf_counter() - t1)
        rates["batched"][threads] = len(items) / min(t_b)
        attribute_only[threads] = len(items) / min(t_a)
        n = n_loop if threads == 1 else min(64, n_loop)   # the loop with several threads is slow: fewer pairs
        t0 = time.perf_counter()
        cos_1, loop = original_loop(model, tokenizer, captions[:n], images[:n])
        rates["loop"][threads] = n / (time.perf_counter() - t0)
        diffs.append(agreement(cos_b, words_b, items, cos_1, loop))
    diff, mismatched = max(d for d, _ in diffs), max(m for _, m in diffs)
    print(f"model: {source}; {len(items)} world captions with random image embeddings; batch {args.batch_size}")
    for kind in ("loop", "batched"):
        for threads, rate in rates[kind].items():
            label = "independent one-pair loop (the original's way)" if kind == "loop" else "ours, batched"
            extra = f"  ({attribute_only[threads]:.1f} without tokenising)" if kind == "batched" else ""
            print(f"{label:48s} {threads} thread(s): {rate:10.1f} pairs/s{extra}")
    best_b, best_1 = max(rates["batched"].values()), max(rates["loop"].values())
    print(f"ratio batched / one-pair loop, each at its faster thread count (<= {args.threads}): "
          f"{best_b / best_1:.1f}x; agreement on the {n_loop} loop pairs: max |difference| of word scores and "
          f"cosines {diff:.2e}, pairs with different word lists {mismatched}")
    return 0 if diff <= 1e-5 and mismatched == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
