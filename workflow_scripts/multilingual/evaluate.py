"""Evaluate one multilingual model on the held-out images before alignment (the frozen baseline: the head at
initialisation, t·I_rect, head.frozen_head) and after (every run of the sweep, its head under each
epoch-selection rule of align.RULES: `selected` and `last`): per language and macro-averaged.

Tasks (rows of metrics.parquet: key, task, language, metric, value):
- `t2i` / `i2t`: captions of one language query the images, and images query that language's captions:
  R@1/5/10, mAP, MRR (workflow_scripts.multilingual.metrics, pessimistic ties).
- `i2t_all`: images query the captions of every language together (all of an image's captions relevant;
  here mAP differs from MRR).
- `pivot` (language "a>b"): a caption in language a picks its best image, and that image ranks language
  b's captions; metrics of the true b caption of the query's image. `direct` ("a>b"): a's caption ranks b's
  captions by text–text cosine, no pivot (how far the languages share one space).
- `zero_shot`: acc1 on the world's shape/colour sets with per-language prompts.
- `diagnostics` (language or "image"): effective ranks, PCA-90, isotropy, PoZ, entropy
  (workflow_scripts.evaluate.purity.representation_diagnostics) of the held-out embeddings; on the images captioned
  in every language, the original's hubness (hub_skew, hub_ratio_1pct per language), neighbour overlap
  (neighbour_overlap, per pair "a~b" and "all") and language-ID probe (langid_acc1, "all"), and our
  retrieval variants t2i_hub_skew, t2i_hub_ratio_1pct, t2i_overlap (workflow_scripts.multilingual.diagnostics;
  settings multilingual.evaluate.diagnostics).
- gram.parquet: the cross-lingual Gram (RSA) correlation of every pair of languages (and the images).
per_query.npz: per-caption t2i R@1 hits of each key and language (paired intervals over images).
"""

from __future__ import annotations

import argparse
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..common.errors import InputError
from ..common.io import load_npz, run_cli, save_npz, setup_logging, write_table
from . import diagnostics as xdiag
from .align import RULES, load_heads, rule_key
from .head import frozen_head
from .images import SEP, normalize
from .metrics import per_query, retrieval_metrics, same_id

log = logging.getLogger(__name__)

FROZEN = "frozen"


def apply(head: torch.nn.Module | None, x: np.ndarray) -> np.ndarray:
    """Unit rows of head(x); head None: x itself (evaluate_key passes the frozen head, never None)."""
    if head is None:
        return normalize(x)
    with torch.no_grad():
        return normalize(head(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy())


def _rows(task: str, language: str, metrics: dict) -> list[dict]:
    return [{"task": task, "language": language, "metric": k, "value": float(v)} for k, v in metrics.items()]


@dataclass
class HeldOut:
    """What every key's evaluation shares (it depends on no head): the unit held-out images, the caption
    ids, the relevance masks of each task, the images' diagnostics and the rows of the images captioned in
    every language (the Gram spaces)."""

    V: np.ndarray
    ids: np.ndarray
    tid: dict[str, np.ndarray]
    t2i: dict[str, np.ndarray]                  # caption × image relevance per language
    has: dict[str, np.ndarray]                  # images with a caption in the language
    i2t: dict[str, np.ndarray]                  # those images × the language's captions
    pooled: np.ndarray                          # image × every language's captions
    pairs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]    # (a, b): relevance, keep
    image_diagnostics: dict[str, float]
    gram_rows: dict[str, np.ndarray]            # per space ("image", languages) its rows of the common images


def heldout(data: dict, languages: Sequence[str]) -> HeldOut:
    """The head-independent part of the held-out evaluation, computed once for all keys."""
    from ..evaluate.purity import representation_diagnostics

    V = normalize(data["heldout::image"])
    ids = data["heldout::ids"]
    tid = {lang: data[f"heldout{SEP}{lang}{SEP}ids"] for lang in languages}
    has = {lang: np.isin(ids, tid[lang]) for lang in languages}
    pairs = {}
    for a, b in itertools.permutations(languages, 2):
        relevant = same_id(tid[a], tid[b])
        pairs[a, b] = relevant, relevant.any(axis=1)              # keep: the query's image has a b-caption
    common = np.asarray(sorted(set(ids).intersection(*[set(tid[lang]) for lang in languages])))
    gram_rows = {"image": np.searchsorted(ids, common)}
    for lang in languages:
        order = np.argsort(tid[lang])
        gram_rows[lang] = order[np.searchsorted(tid[lang][order], common)]
    return HeldOut(V=V, ids=ids, tid=tid, t2i={lang: same_id(tid[lang], ids) for lang in languages}, has=has,
                   i2t={lang: same_id(ids[has[lang]], tid[lang]) for lang in languages},
                   pooled=same_id(ids, np.concatenate([tid[lang] for lang in languages])), pairs=pairs,
                   image_diagnostics=representation_diagnostics(V), gram_rows=gram_rows)


def evaluate_key(data: dict, held: HeldOut, languages: Sequence[str], head: torch.nn.Module | None,
                 zero_shot_sets: Sequence[str], diagnostics: dict | None = None
                 ) -> tuple[list[dict], dict[str, np.ndarray], pd.DataFrame]:
    """Every task for one head on the held-out split: (metric rows, per-language t2i R@1 hits, Gram table).
    head None: the frozen baseline, the head at initialisation (frozen_head; any text width)."""
    from ..evaluate.purity import representation_diagnostics, rsa_correlation

    V = held.V
    if head is None:
        head = frozen_head(data[f"heldout{SEP}{languages[0]}{SEP}text"].shape[1], V.shape[1])
    text = {lang: apply(head, data[f"heldout{SEP}{lang}{SEP}text"]) for lang in languages}
    rows, hits = [], {}
    for lang in languages:
        t2i = per_query(text[lang] @ V.T, held.t2i[lang])
        hits[lang] = t2i["R@1"]
        rows += _rows("t2i", lang, {k: v.mean() for k, v in t2i.items()})
        rows += _rows("i2t", lang, retrieval_metrics(V[held.has[lang]] @ text[lang].T, held.i2t[lang]))
    pooled = np.concatenate([text[lang] for lang in languages])
    rows += _rows("i2t_all", "all", retrieval_metrics(V @ pooled.T, held.pooled))
    for a, b in itertools.permutations(languages, 2):
        pivot = (text[a] @ V.T).argmax(axis=1)                     # each a-caption's best image
        relevant, keep = held.pairs[a, b]
        rows += _rows("pivot", f"{a}>{b}", retrieval_metrics((V[pivot] @ text[b].T)[keep], relevant[keep]))
        rows += _rows("direct", f"{a}>{b}", retrieval_metrics((text[a] @ text[b].T)[keep], relevant[keep]))
    for name in zero_shot_sets:
        images, labels = data[f"zs{SEP}{name}{SEP}image"], data[f"zs{SEP}{name}{SEP}labels"]
        for lang in languages:
            classes = apply(head, data[f"zs{SEP}{name}{SEP}{lang}{SEP}classes"])
            acc = float(((images @ classes.T).argmax(axis=1) == labels).mean())
            rows += _rows("zero_shot", lang, {f"{name}_acc1": acc})
    for lang in languages:
        rows += _rows("diagnostics", lang, representation_diagnostics(text[lang]))
    rows += _rows("diagnostics", "image", held.image_diagnostics)
    spaces = {"image": V[held.gram_rows["image"]]}
    for lang in languages:
        spaces[lang] = text[lang][held.gram_rows[lang]]
    rows += [{"task": "diagnostics", "language": language, "metric": metric, "value": float(value)}
             for language, metric, value in xdiag.crosslingual_rows({lang: spaces[lang] for lang in languages},
                                                                    spaces["image"], diagnostics)]
    rsa = {(a, b): rsa_correlation(spaces[a], spaces[b]) for a, b in itertools.combinations(spaces, 2)}
    rsa.update({(b, a): v for (a, b), v in list(rsa.items())})          # symmetric (bit for bit)
    gram = [{"a": a, "b": b, "rsa": rsa[a, b] if a != b else 1.0} for a in spaces for b in spaces]
    return rows, hits, pd.DataFrame(gram)


def macro_rows(rows: pd.DataFrame, languages: Sequence[str], first: str) -> pd.DataFrame:
    """Macro averages over languages of t2i / i2t / zero-shot (language 'macro'), and over the languages
    other than the first ('macro_other')."""
    per_lang = rows[rows["task"].isin(["t2i", "i2t", "zero_shot"]) & rows["language"].isin(languages)]
    keys = [c for c in rows.columns if c not in ("language", "value")]
    out = [per_lang.groupby(keys, as_index=False, dropna=False)["value"].mean().assign(language="macro")]
    others = per_lang[per_lang["language"] != first]
    out.append(others.groupby(keys, as_index=False, dropna=False)["value"].mean().assign(language="macro_other"))
    return pd.concat(out, ignore_index=True)


def evaluate(config: dict, name: str, embeddings: str, sweep_table: str, heads_path: str, out_dir: str) -> pd.DataFrame:
    """Frozen baseline and every head of the sweep under every rule (column `rule`; key = align.rule_key);
    writes metrics.parquet, gram.parquet, per_query.npz."""
    ml = config["multilingual"]
    languages = ml["languages"]
    data = load_npz(embeddings)
    for lang in languages:
        if len(data.get(f"heldout{SEP}{lang}{SEP}ids", [])) == 0:
            raise InputError(f"{embeddings}: language {lang!r} has no held-out captions")
    zs = ml["evaluate"]["zero_shot_sets"] if ml["models"][name]["source"] == "embedded" else []
    runs = pd.read_parquet(sweep_table)
    d_text, d_img = data[f"heldout{SEP}{languages[0]}{SEP}text"].shape[1], data["heldout::image"].shape[1]
    keys = [rule_key(k, rule) for k in runs["key"] for rule in RULES]
    heads = load_heads(heads_path, keys, d_text, d_img, ml["align"]["mlp_hidden"])
    held = heldout(data, languages)
    tables, grams, hits = [], [], {}
    specs = [(FROZEN, frozen_head(d_text, d_img),
              {"head": FROZEN, "prox_id": np.nan, "ortho": np.nan, "seed": -1, "rule": FROZEN})]
    specs += [(rule_key(r.key, rule), heads[rule_key(r.key, rule)],
               {"head": r.head, "prox_id": r.prox_id, "ortho": r.ortho, "seed": r.seed, "rule": rule})
              for r in runs.itertuples() for rule in RULES]
    for key, head, tags in specs:
        rows, key_hits, gram = evaluate_key(data, held, languages, head, zs, ml["evaluate"].get("diagnostics"))
        tables.append(pd.DataFrame(rows).assign(key=key, **tags))
        grams.append(gram.assign(key=key, **tags))
        hits.update({f"{key}{SEP}{lang}": h for lang, h in key_hits.items()})
    metrics = pd.concat(tables, ignore_index=True)
    metrics = pd.concat([metrics, macro_rows(metrics, languages, languages[0])], ignore_index=True).assign(model=name)
    out = Path(out_dir)
    write_table(metrics, out / "metrics.parquet")
    write_table(pd.concat(grams, ignore_index=True).assign(model=name), out / "gram.parquet")
    save_npz(out / "per_query.npz", **hits)
    return metrics


def main(argv: list[str] | None = None) -> int:
    from ..common.config import load_config

    ap = argparse.ArgumentParser(description="Multilingual evaluation before and after alignment.")
    ap.add_argument("--config", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--embeddings", required=True)
    ap.add_argument("--sweep", required=True)
    ap.add_argument("--heads", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    torch.set_num_threads(1)
    evaluate(load_config(args.config), args.model, args.embeddings, args.sweep, args.heads, args.out_dir)
    return 0


if __name__ == "__main__":
    run_cli(main)
