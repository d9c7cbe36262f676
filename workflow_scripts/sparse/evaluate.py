"""Sparse concept decompositions of every checkpoint of one model over a penalty sweep.

    python -m workflow_scripts.sparse.evaluate --config C --concepts results/sparse/clip/concepts.npz \\
        --features results/eval/features/clip.npz \\
        --run kind=pretrained --projections results/eval/pretrained/clip/projections.npz \\
        --run kind=finetune,strategy=random,cs=0.3,seed=0 --projections results/finetune/.../projections.npz \\
        --out-dir results/sparse/clip

Per checkpoint (its projections applied to the model's cached pre-projection features: no model is built)
the concept dictionary, image mean and caption (text) mean are made (sparse.centring), each image of
`sparse.sets` (default: every evaluation set) is decomposed at every lambda (largest first, each solve
warm-started from the previous one: the solver stops at the exact KKT point, so the supports are those of a
cold start) and scored: zero-shot acc1 of the recomposed embeddings beside the dense acc1 (the same
classifier), l0 (mean, quantiles and its distribution), mean cos(z_hat, z), and the bytes of the set's
embeddings stored dense (float32) and sparse (CSR: float32 values, the smallest unsigned index type for K
concepts, int32 row pointers). At `sparse.example_lambda` the top concepts per class (mean weight over the
class's images) and of a few example images are listed.

With `sparse.captions` the evaluation's image-caption pairs (the first held-out pairs, set `heldout_pairs`;
`train_pairs` when data.heldout_csv is not set) are decomposed too, both modalities (column `modality`):
images centred by the image mean, captions by the caption mean (SpLiCE's text path: normalize(normalize(t) -
mu_text), recomposed as normalize(normalize(wC) + mu_text)). Their task score is retrieval among the pairs
with the recomposed query against the dense gallery of the other modality, as SpLiCE's retrieval experiment
does (r1_sparse: image->text R@1 on image rows, text->image R@1 on text rows; r1_dense the same with the
dense query), and both rows carry the agreement of each pair's caption and image decompositions at that
lambda (pair_weight_cos: mean cosine of the two weight vectors; pair_jaccard: mean Jaccard index of their
supports, 1 when both are empty).

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

from ..common.config import load_config
from ..common.errors import InputError
from ..evaluate.run import PAIR_SETS, SEP, load_projections, parse_tag, parse_tags, set_embeddings
from ..common.io import load_npz, run_cli, setup_logging, torch_threads_from_env, write_table
from ..evaluate.zeroshot import zero_shot_logits
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


def sweep_embeddings(C: np.ndarray, mu: np.ndarray, Z: np.ndarray, settings: dict):
    """Yield (lambda, solution, weights (N, K), recomposed (N, D), seconds) over settings['lambdas'], largest
    first, each solve warm-started from the previous one (float64). Z are raw embeddings of one modality
    and mu that modality's mean (centring.center_images / recompose)."""
    import torch

    Ct = torch.from_numpy(np.ascontiguousarray(C, dtype=np.float64))
    Zc = torch.from_numpy(centring.center_images(Z, mu))
    prev = None
    for lam in sorted(settings["lambdas"], reverse=True):
        start = time.perf_counter()
        sol = solver.solve(Ct, Zc, lam, tol=settings["tol"], warm_start=prev)
        seconds = time.perf_counter() - start
        prev = sol.weights
        W = sol.weights.cpu().numpy()
        if not bool(sol.converged.all()):
            log.warning("lambda %g: %d of %d embeddings did not reach the stopping rule", lam,
                        int((~sol.converged).sum()), len(W))
        yield lam, sol, W, centring.recompose(W, C, mu), seconds


def solution_metrics(sol, W: np.ndarray, Zhat: np.ndarray, Z: np.ndarray, seconds: float) -> dict:
    """l0 summary, mean cos(z_hat, z), storage bytes and the solver's diagnostics of one (set, lambda)."""
    l0 = (W > 0).sum(axis=1)
    dense_b, sparse_b = storage_bytes(l0, W.shape[1], Z.shape[1])
    return {
        "l0_mean": float(l0.mean()), "l0_median": float(np.median(l0)), "l0_p10": float(np.quantile(l0, 0.1)),
        "l0_p90": float(np.quantile(l0, 0.9)), "l0_max": int(l0.max()),
        "cos_mean": float((Zhat * centring.normalize(Z)).sum(axis=1).mean()),
        "bytes_dense": dense_b, "bytes_sparse": sparse_b, "n_images": len(W), "n_concepts": W.shape[1],
        "dim": Z.shape[1], "converged": float(sol.converged.float().mean()),
        "kkt": float(sol.kkt.float().mean()), "max_kkt_violation": float(sol.violation.max()),
        "max_rel_gap": float((sol.gap / sol.objective.clamp_min(1e-300)).max()), "solve_s": seconds,
    }


def decompose_set(C: np.ndarray, mu: np.ndarray, data: dict, settings: dict):
    """Yield (lambda, weights (N, K), l0 (N,), predicted classes (N,), per-lambda metrics) over the sweep of
    settings['lambdas'], largest lambda first (solved in float64)."""
    Z = data["image"].astype(np.float64)
    labels, classifier = data["labels"], data["classifier"]
    acc1_dense = float((zero_shot_logits(Z, classifier).argmax(axis=1) == labels).mean())
    for lam, sol, W, Zhat, seconds in sweep_embeddings(C, mu, Z, settings):
        pred = zero_shot_logits(Zhat, classifier).argmax(axis=1)
        metrics = {"acc1_dense": acc1_dense, "acc1_sparse": float((pred == labels).mean()),
                   **solution_metrics(sol, W, Zhat, Z, seconds)}
        yield lam, W, (W > 0).sum(axis=1), pred, metrics


def recall_at_1(queries: np.ndarray, gallery: np.ndarray) -> float:
    """Fraction of queries i whose most similar gallery row (cosine) is row i (ties: the lower index)."""
    sims = centring.normalize(queries) @ centring.normalize(gallery).T
    return float((sims.argmax(axis=1) == np.arange(len(queries))).mean())


def pair_agreement(W_image: np.ndarray, W_text: np.ndarray) -> dict:
    """Mean cosine of each pair's image and caption weight vectors (0 when either is all zero) and mean
    Jaccard index of their supports (1 when both are empty)."""
    norms = np.linalg.norm(W_image, axis=1) * np.linalg.norm(W_text, axis=1)
    dots = (W_image * W_text).sum(axis=1)
    cos = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    a, b = W_image > 0, W_text > 0
    union, inter = (a | b).sum(axis=1), (a & b).sum(axis=1)
    jac = np.divide(inter, union, out=np.ones(len(a)), where=union > 0)
    return {"pair_weight_cos": float(cos.mean()), "pair_jaccard": float(jac.mean())}


def decompose_pairs(C: np.ndarray, mu_image: np.ndarray, mu_text: np.ndarray, image: np.ndarray,
                    text: np.ndarray, settings: dict):
    """Yield (lambda, {modality: (weights, metrics)}) over the sweep for the image-caption pairs: each
    modality decomposed with its own mean, scored by R@1 of its recomposed embeddings against the other
    modality's dense embeddings (r1_dense: dense against dense), with the pairs' concept agreement."""
    image, text = image.astype(np.float64), text.astype(np.float64)
    gallery = {"image": text, "text": image}            # the other modality, dense
    dense = {m: recall_at_1(Z, gallery[m]) for m, Z in (("image", image), ("text", text))}
    sweeps = {"image": sweep_embeddings(C, mu_image, image, settings),
              "text": sweep_embeddings(C, mu_text, text, settings)}
    for (lam, *img), (_, *txt) in zip(sweeps["image"], sweeps["text"]):
        out = {}
        for modality, Z, (sol, W, Zhat, seconds) in (("image", image, img), ("text", text, txt)):
            out[modality] = (W, {"r1_dense": dense[modality], "r1_sparse": recall_at_1(Zhat, gallery[modality]),
                                 **solution_metrics(sol, W, Zhat, Z, seconds)})
        agreement = pair_agreement(out["image"][0], out["text"][0])
        for modality in out:
            out[modality][1].update(agreement)
        yield lam, out


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


def caption_mean(concepts: dict, text_p: np.ndarray) -> np.ndarray:
    """(D,) mean normalised embedding of the training captions sparse.encode encoded (the text analogue of
    the image mean) under a checkpoint's text projection."""
    if "caption" not in concepts:
        raise InputError("the concept features lack 'caption' (training-caption features for the text mean): "
                         "re-run workflow_scripts.sparse.encode, or set sparse.captions false")
    return centring.image_mean(concepts["caption"].astype(np.float64) @ text_p.T)


def pair_embeddings(features: dict, image_p: np.ndarray,
                    text_p: np.ndarray) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(set name, image (N, D), caption (N, D)) embeddings of the evaluation's image-caption pairs (the
    held-out pairs, else the training pairs), or None when the features file has none."""
    name = next((p for p in PAIR_SETS if f"{p}{SEP}image" in features and f"{p}{SEP}text" in features), None)
    if name is None:
        return None
    return name, features[f"{name}{SEP}image"] @ image_p.T, features[f"{name}{SEP}text"] @ text_p.T


def _record(sweep: list, hist: list, key: dict, metrics: dict, W: np.ndarray, tags: dict) -> None:
    sweep.append({**key, **metrics})
    values, counts = np.unique((W > 0).sum(axis=1), return_counts=True)
    hist += [{**key, "l0": int(v), "count": int(c)} for v, c in zip(values, counts)]
    log.info("%s %s %s lambda=%g: %s", tags, key["set"], key["modality"], key["lambda"],
             {k: round(v, 4) for k, v in metrics.items()})


def pair_concept_rows(W: np.ndarray, names: np.ndarray, settings: dict) -> list[dict]:
    """Top concepts of the first settings['examples'] pairs' members (scope 'pair'; image = pair index)."""
    return [{"scope": "pair", "class": "", "image": i, "rank": rank, "concept": concept, "weight": weight}
            for i in range(min(settings["examples"], len(W)))
            for rank, (concept, weight) in enumerate(top_concepts(W[i], names, settings["top_concepts"]))]


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
            key = {**tags, "set": name, "modality": "image", "lambda": lam}
            _record(sweep, hist, key, metrics, W, tags)
            if np.isclose(lam, settings["example_lambda"]):
                listed += [{**key, **row} for row in concept_rows(W, names, data, pred, settings)]
    pairs = pair_embeddings(features, image_p, text_p) if settings.get("captions", True) else None
    if settings.get("captions", True) and pairs is None:
        log.warning("sparse.captions: the features file has no image-caption pairs (%s): captions not decomposed",
                    " or ".join(PAIR_SETS))
    if pairs is not None:
        name, image, text = pairs
        if settings["max_images"]:
            image, text = image[:settings["max_images"]], text[:settings["max_images"]]
        for lam, out in decompose_pairs(C, mu, caption_mean(concepts, text_p), image, text, settings):
            for modality, (W, metrics) in out.items():
                key = {**tags, "set": name, "modality": modality, "lambda": lam}
                _record(sweep, hist, key, metrics, W, tags)
                if np.isclose(lam, settings["example_lambda"]):
                    listed += [{**key, **row} for row in pair_concept_rows(W, names, settings)]
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
