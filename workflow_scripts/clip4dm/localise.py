"""FOIL-style localisation on the embedded world's held-out images, per checkpoint of one model.

For the pretrained model and (clip4dm.foils.finetuned) every projection-only fine-tune of it: epsilon
calibrated on the held-out aligned pairs with that checkpoint, then every foil and original caption of the
pack's foil table scored with its image. Per attribute (and 'all'): localisation accuracy (the most-negative
word is the foil word, lower-case exact match) with its chance level (mean 1 / number of words) and a Wilson
interval, and AP with the original captions as the positive class for F-CLIPScore and CLIPScore (as the
original computes it), over the foils of that attribute and the originals of their images. F-CLIPScore by
clip4dm.fclipscore.world_foils, default most_negative: the set is FOIL-style (one word replaced), and the
original scores FOIL and nocaps-FOIL by the most negative word.

    python -m workflow_scripts.clip4dm.localise --config CONFIG --pack results/clip4dm/clip/pack.npz --model clip \\
        --finetuned none:0.0:0:results/finetune/clip/none/Cs0.0/seed0/checkpoint.pt ... \\
        --out-metrics results/clip4dm/clip/localisation.parquet --out-foils results/clip4dm/clip/foils.parquet
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd

from ..common.errors import InputError
from ..common.intervals import wilson_interval

log = logging.getLogger(__name__)


def localisation_metrics(rows: pd.DataFrame) -> pd.DataFrame:
    """Per attribute (and 'all'): n, LA with Wilson interval, chance, AP of F-CLIPScore and CLIPScore."""
    from .metrics import ap_auroc, localisation_accuracy

    out = []
    foils = rows[rows["kind"] == "foil"]
    for attribute in sorted(foils["attribute"].unique()) + ["all"]:
        f = foils if attribute == "all" else foils[foils["attribute"] == attribute]
        originals = rows[(rows["kind"] == "original") & rows["image"].isin(f["image"])]
        both = pd.concat([originals, f])
        positive = (both["kind"] == "original").to_numpy()
        la = localisation_accuracy(list(f["worst_word"]), list(f["foil_word"]))
        k = int(round(la * len(f)))
        low, high = wilson_interval(k, len(f))
        ap_f, auroc_f = ap_auroc(positive, both["fclipscore"].to_numpy())
        ap_c, auroc_c = ap_auroc(positive, both["clipscore"].to_numpy())
        out.append({"attribute": attribute, "n_foils": len(f), "n_originals": len(originals), "la": la,
                    "la_low": low, "la_high": high, "la_chance": float(np.mean(1.0 / f["n_words"])),
                    "ap_fclipscore": ap_f, "auroc_fclipscore": auroc_f, "ap_clipscore": ap_c,
                    "auroc_clipscore": auroc_c, "ap_chance": float(positive.mean())})
    return pd.DataFrame(out)


def score_foils(tower, table, settings: dict, pack, image_emb: np.ndarray, epsilon: float) -> pd.DataFrame:
    """The pack's foil table with each caption scored against its held-out image (`image_emb`: the held-out
    images' embeddings with the checkpoint's head)."""
    from .pipeline import score_pairs
    from .scores import score_table

    cols = ("image", "kind", "attribute", "caption", "foil_word", "foil_index")
    rows = pd.DataFrame({c: pack.arrays[f"foils.{c}"] for c in cols})
    items, cos, attr = score_pairs(tower, table, list(rows["caption"]), image_emb[rows["image"].to_numpy()], settings)
    words = [t.words for t in items]
    scored = score_table(words, attr, cos, epsilon, settings.get("fclipscore", {}).get("world_foils", "most_negative"),
                         settings.get("punctuation", "original"))
    for key in ("cos", "clipscore", "fclipscore", "negative_sum", "worst_word", "worst_index", "worst_score"):
        rows[key] = scored[key]
    rows["worst_word"] = rows["worst_word"].astype(str)
    rows["n_words"] = [len(w) for w in words]
    rows["words"] = words
    rows["attributions"] = [a.astype(float).tolist() for a in attr]
    return rows


def localise(config: dict, pack_path: str, model: str, finetuned: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    import torch

    from ..models.checkpoints import load_checkpoint
    from ..models.clip import state_dict_of
    from .pipeline import Pack, embed_images, with_checkpoint
    from .prepare import epsilon_for

    torch.set_num_threads(1)
    settings = config["clip4dm"]
    pack = Pack.load(pack_path)
    if "foils.caption" not in pack.arrays:
        raise InputError(f"{pack_path}: has no foil table (the embedded world is off or there are no held-out pairs)")
    tower, head, table = pack.tower(), pack.head(), pack.table()
    held = [str(c) for c in pack.arrays["heldout.captions"]]
    where = [f"held-out pair {i}" for i in range(len(held))]
    checkpoints = [("pretrained", 0.0, -1, None)]
    for item in finetuned:
        parts = item.split(":", 3)
        if len(parts) != 4:
            raise InputError(f"--finetuned {item!r}: expected STRATEGY:CS:SEED:CHECKPOINT")
        checkpoints.append((parts[0], float(parts[1]), int(parts[2]), parts[3]))
    metrics, example_rows = [], None
    for strategy, cs, seed, path in checkpoints:
        t0 = time.time()
        if path is None:
            tw, hd = tower, head
        else:
            tw, hd = with_checkpoint(tower, head, state_dict_of(load_checkpoint(path), path), path)
        emb = embed_images(hd, pack.arrays["heldout.features"])     # once per checkpoint: epsilon and foils
        epsilon = float(pack.arrays["epsilon"]) if path is None else epsilon_for(tw, table, settings, emb, held, where)
        rows = score_foils(tw, table, settings, pack, emb, epsilon)
        m = localisation_metrics(rows)
        m.insert(0, "model", model)
        m.insert(1, "checkpoint", "pretrained" if path is None else "finetuned")
        m.insert(2, "strategy", strategy)
        m.insert(3, "cs", cs)
        m.insert(4, "seed", seed)
        m["epsilon"] = epsilon
        metrics.append(m)
        if path is None:
            example_rows = rows
        log.info("%s %s Cs%s seed%s: LA(all) %.3f, %.1f s", model, strategy, cs, seed,
                 m.loc[m["attribute"] == "all", "la"].iloc[0], time.time() - t0)
    example_rows.insert(0, "model", model)
    return pd.concat(metrics, ignore_index=True), example_rows


def main(argv: list[str] | None = None) -> int:
    from ..common.config import load_config
    from ..common.io import setup_logging, write_table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--pack", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--finetuned", nargs="*", default=[], metavar="STRATEGY:CS:SEED:CHECKPOINT",
                    help="projection-only fine-tunes of the model")
    ap.add_argument("--out-metrics", required=True, help=".parquet")
    ap.add_argument("--out-foils", required=True, help="the pretrained model's scored foils .parquet")
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    metrics, rows = localise(load_config(args.config), args.pack, args.model, args.finetuned)
    write_table(rows, args.out_foils)
    write_table(metrics, args.out_metrics)
    log.info("\n%s", metrics[metrics["checkpoint"] == "pretrained"].to_string(index=False))
    return 0


if __name__ == "__main__":
    from ..common.io import run_cli

    run_cli(main)
