"""Sparse concept decompositions of every checkpoint of one model over a penalty sweep.

    python -m workflow_scripts.sparse.evaluate --config C --concepts results/sparse/clip/concepts.npz \\
        --features results/eval/features/clip.npz \\
        --run kind=pretrained --projections results/eval/pretrained/clip/projections.npz \\
        --run kind=finetune,strategy=random,cs=0.3,seed=0 --projections results/finetune/.../projections.npz \\
        --out-dir results/sparse/clip

Per checkpoint (its projections applied to the model's cached pre-projection features: no model is built)
the concept dictionary and image mean are made (sparse.centring), each image of `sparse.sets` is decomposed
at every lambda (largest first, each solve warm-started from the previous one) and scored:
zero-shot acc1 of the recomposed embeddings beside the dense acc1 (the same classifier), l0 (mean,
quantiles and its distribution), mean cos(z_hat, z), and the bytes of the set's embeddings stored dense
(float32) and sparse (CSR: float32 values, the smallest unsigned index type for K concepts, int32 row
pointers). At `sparse.example_lambda` the top concepts per class (mean weight over the class's images) and
of a few example images are listed.

One job per model: ~3 s of start-up per Python job would cost more than all of a model's decompositions.
Outputs: sweep.parquet, l0.parquet (distribution), concepts.parquet.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import pandas as pd

from ..config import load_config
from ..errors import InputError
from ..evaluate import SEP, load_projections, parse_tag, parse_tags, set_embeddings
from ..io import load_npz, run_cli, setup_logging, torch_threads_from_env, write_table
from ..zeroshot import zero_shot_logits
from . import centring, solver
from .paths import decomposed_sets

log = logging.getLogger(__name__)


def storage_bytes(l0: np.ndarray, n_concepts: int, dim: int) -> tuple[int, int]:
    """(dense, sparse) bytes of N embeddings: dense float32 (N, dim); sparse CSR with float32 values, the
    smallest unsigned integer type that indexes n_concepts, and N + 1 int32 row pointers."""
    index_bytes = 1 if n_concepts <= 2 ** 8 else 2 if n_concepts <= 2 ** 16 else 4
    nnz = int(np.sum(l0))
    return 4 * len(l0) * dim, nnz * (4 + index_bytes) + 4 * (len(l0) + 1)


def checkpoint_dictionary(concepts: dict, image_p: np.ndarray, text_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A checkpoint's centred concept dictionary (K, D) and image mean (D,) from the model's pre-projection
    features and the checkpoint's projections (rows = output neurons)."""
    for key, P in (("text", text_p), ("image", image_p)):
        if concepts[key].shape[1] != P.shape[1]:
            raise InputError(f"concept features '{key}' have width {concepts[key].shape[1]} but the projection "
                             f"expects {P.shape[1]}: were they made from another model?")
    return (centring.center_concepts(concepts["text"].astype(np.float64) @ text_p.T),
            centring.image_mean(concepts["image"].astype(np.float64) @ image_p.T))


def top_concepts(weights: np.ndarray, names: np.ndarray, n: int) -> list[tuple[str, float]]:
    """The n largest positive weights of a vector as (concept, weight), largest first."""
    order = np.argsort(-weights, kind="stable")[:n]
    return [(str(names[k]), float(weights[k])) for k in order if weights[k] > 0]


def decompose_set(C: np.ndarray, mu: np.ndarray, data: dict, settings: dict):
    """Yield (lambda, weights (N, K), l0 (N,), predicted classes (N,), per-lambda metrics) over the sweep of
    settings['lambdas'], largest lambda first (solved in float64)."""
    import torch

    Z = data["image"].astype(np.float64)
    Ct = torch.from_numpy(C).to(torch.float64)
    Zc = torch.from_numpy(centring.center_images(Z, mu)).to(torch.float64)
    labels, classifier = data["labels"], data["classifier"]
    acc1_dense = float((zero_shot_logits(Z, classifier).argmax(axis=1) == labels).mean())
    prev = None
    for lam in sorted(settings["lambdas"], reverse=True):
        start = time.perf_counter()
        sol = solver.solve(Ct, Zc, lam, tol=settings["tol"], warm_start=prev)
        seconds = time.perf_counter() - start
        prev = sol.weights
        W = sol.weights.cpu().numpy()
        Zhat = centring.recompose(W, C, mu)
        pred = zero_shot_logits(Zhat, classifier).argmax(axis=1)
        l0 = (W > 0).sum(axis=1)
        dense_b, sparse_b = storage_bytes(l0, C.shape[0], C.shape[1])
        if not bool(sol.converged.all()):
            log.warning("lambda %g: %d of %d embeddings did not reach the stopping rule", lam,
                        int((~sol.converged).sum()), len(W))
        yield lam, W, l0, pred, {
            "acc1_dense": acc1_dense, "acc1_sparse": float((pred == labels).mean()),
            "l0_mean": float(l0.mean()), "l0_median": float(np.median(l0)), "l0_p10": float(np.quantile(l0, 0.1)),
            "l0_p90": float(np.quantile(l0, 0.9)), "l0_max": int(l0.max()),
            "cos_mean": float((Zhat * Z / np.linalg.norm(Z, axis=1, keepdims=True)).sum(axis=1).mean()),
            "bytes_dense": dense_b, "bytes_sparse": sparse_b, "n_images": len(W), "n_concepts": C.shape[0],
            "dim": C.shape[1], "converged": float(sol.converged.float().mean()),
            "max_rel_gap": float((sol.gap / sol.objective.clamp_min(1e-300)).max()), "solve_s": seconds,
        }


def concept_rows(W: np.ndarray, names: np.ndarray, data: dict, pred: np.ndarray, settings: dict) -> list[dict]:
    """Top concepts per class (mean weight) and per example image (the first image of each class in turn)."""
    n, labels, classnames = settings["top_concepts"], data["labels"], data["classnames"]
    rows = []
    for k, cls in enumerate(classnames):
        members = labels == k
        if members.any():
            for rank, (concept, weight) in enumerate(top_concepts(W[members].mean(axis=0), names, n)):
                rows.append({"scope": "class", "class": str(cls), "image": -1, "rank": rank, "concept": concept,
                             "weight": weight})
    firsts = [np.flatnonzero(labels == k) for k in range(len(classnames))]
    examples = [f[r] for r in range(max((len(f) for f in firsts), default=0)) for f in firsts if r < len(f)]
    for i in examples[:settings["examples"]]:
        for rank, (concept, weight) in enumerate(top_concepts(W[i], names, n)):
            rows.append({"scope": "image", "class": str(classnames[labels[i]]), "image": int(i), "rank": rank,
                         "concept": concept, "weight": weight, "predicted": str(classnames[pred[i]])})
    return rows


def evaluate_run(concepts: dict, features: dict, image_p: np.ndarray, text_p: np.ndarray, settings: dict,
                 tags: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """Sweep, l0-distribution and concept rows of one checkpoint."""
    C, mu = checkpoint_dictionary(concepts, image_p, text_p)
    names = concepts["concepts"]
    sweep, hist, listed = [], [], []
    for name in settings["sets"]:
        if f"{name}{SEP}image" not in features:
            raise InputError(f"sparse.sets: no evaluation set {name!r} in the features file")
        data = set_embeddings(features, name, image_p, text_p)
        if settings["max_images"]:
            data = {k: (v[:settings["max_images"]] if k in ("image", "labels") else v) for k, v in data.items()}
        for lam, W, l0, pred, metrics in decompose_set(C, mu, data, settings):
            key = {**tags, "set": name, "lambda": lam}
            sweep.append({**key, **metrics})
            values, counts = np.unique(l0, return_counts=True)
            hist += [{**key, "l0": int(v), "count": int(c)} for v, c in zip(values, counts)]
            if np.isclose(lam, settings["example_lambda"]):
                listed += [{**key, **row} for row in concept_rows(W, names, data, pred, settings)]
            log.info("%s %s lambda=%g: %s", tags, name, lam, {k: round(v, 4) for k, v in metrics.items()})
    return sweep, hist, listed


def parse_run(text: str) -> dict:
    """'kind=finetune,strategy=random,cs=0.3,seed=0' -> tags, values parsed as evaluate's --tag values
    (cs=0.3 a float, seed=0 an int, words strings)."""
    return {k: parse_tag(v) for k, v in parse_tags(text.split(","), option="--run").items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sparse concept decompositions of a model's checkpoints.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--concepts", required=True, help="sparse.encode output (concept and mean-image features)")
    parser.add_argument("--features", required=True, help="the model's evaluation features (evaluate features)")
    parser.add_argument("--run", action="append", default=[], help="tags of the next --projections")
    parser.add_argument("--projections", action="append", default=[], help="a checkpoint's projections.npz")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    setup_logging()
    if len(args.run) != len(args.projections) or not args.run:
        raise InputError("give one --run per --projections (and at least one)")
    torch_threads_from_env()
    config = load_config(args.config)                  # checks sets and example_lambda (config.check_config)
    settings = {**config["sparse"], "sets": decomposed_sets(config)}
    concepts = load_npz(args.concepts)
    for key in ("concepts", "text", "image"):
        if key not in concepts:
            raise InputError(f"{args.concepts}: lacks '{key}' (written by workflow_scripts.sparse.encode)")
    features = load_npz(args.features)
    sweep, hist, listed = [], [], []
    for run, path in zip(args.run, args.projections):
        image_p, text_p = load_projections(path)
        s, h, c = evaluate_run(concepts, features, image_p, text_p, settings, {"model": args.model, **parse_run(run)})
        sweep += s
        hist += h
        listed += c
    write_table(pd.DataFrame(sweep), os.path.join(args.out_dir, "sweep.parquet"))
    write_table(pd.DataFrame(hist), os.path.join(args.out_dir, "l0.parquet"))
    write_table(pd.DataFrame(listed), os.path.join(args.out_dir, "concepts.parquet"))
    return 0


if __name__ == "__main__":
    run_cli(main)
