"""Once per model: the frozen towers' pre-projection features of the concept phrases and of a sample of
training pairs (their images and captions). Fine-tunes change only the projections, so every checkpoint's
concept dictionary, image mean and caption mean are these features times its own projection matrices
(sparse.evaluate, no model needed).

    python -m workflow_scripts.sparse.encode --config C --model clip \\
        --checkpoint results/pretrain/clip/checkpoint.pt --vocabulary results/sparse/vocabulary.txt \\
        --out results/sparse/clip/concepts.npz

Phrases are encoded as `sparse.template` with "{c}" replaced (default "{c}": the bare phrase, as SpLiCE
does). The training images are the `sparse.mean_images` first rows of a seeded permutation of
data.train_csv (all rows when 0), preprocessed as the model's `evaluate` preprocessing (the mean
centres evaluation images); the captions of the same rows give the caption mean that centres the captions
sparse.evaluate decomposes (SpLiCE's `text_mean`), encoded only when sparse.captions is on.
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np

from ..common.config import check_model, load_config
from ..common.data import read_pairs_csv
from ..common.errors import InputError
from ..common.io import derive_seed, run_cli, save_npz, setup_logging, torch_threads_from_env
from .dictionary import read_vocabulary

log = logging.getLogger(__name__)


def mean_image_rows(n_rows: int, n_mean: int, seed: int) -> np.ndarray:
    """Sorted row indices of the training images whose embeddings give the image mean."""
    if n_mean <= 0 or n_mean >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).permutation(n_rows)[:n_mean])


def concept_prompts(concepts: list[str], template: str) -> list[str]:
    if "{c}" not in template:
        raise InputError(f"sparse.template: {template!r} lacks the {{c}} placeholder")
    return [template.replace("{c}", c) for c in concepts]


def encode(config: dict, model_name: str, checkpoint: str, vocabulary: str) -> dict[str, np.ndarray]:
    """Concepts, their pre-projection text features and pre-projection features of the mean's images (and,
    with sparse.captions, of those images' captions)."""
    import torch

    from ..finetune.features import extract_image_features, extract_text_features
    from ..models.clip import get_tokenizer, load_model, preprocess_config

    sp, spec = config["sparse"], config["models"][model_name]
    concepts = read_vocabulary(vocabulary, sp["top_k"])
    device = torch.device("cpu")
    model = load_model(spec, checkpoint).eval()        # InputError names the checkpoint if towers are missing
    tokenizer = get_tokenizer(spec["arch"])
    bs = config["evaluate"]["batch_size"]
    text = extract_text_features(model, tokenizer, concept_prompts(concepts, sp["template"]), bs, device)
    rel_paths, captions = read_pairs_csv(config["data"]["train_csv"])
    rows = mean_image_rows(len(rel_paths), sp["mean_images"], derive_seed(config["seed"], sp["seed"]))
    pre = preprocess_config(model, spec, "evaluate")
    image = extract_image_features(model, [rel_paths[i] for i in rows], config["data"]["image_root"], pre, 1,
                                   False, config["seed"], bs, device)[0]
    log.info("%s: %d concepts (template %r), %d training images for the mean (%s)", model_name, len(concepts),
             sp["template"], len(rows), pre)
    out = {"concepts": np.asarray(concepts), "text": text, "image": image, "image_rows": rows,
           "template": np.asarray(sp["template"]), "preprocess": np.asarray(json.dumps(pre, sort_keys=True))}
    if sp.get("captions", True):
        out["caption"] = extract_text_features(model, tokenizer, [captions[i] for i in rows], bs, device)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pre-projection features of concepts and mean images.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--vocabulary", required=True, help="SpLiCE-format vocabulary (least frequent first)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    setup_logging()
    config = load_config(args.config)
    check_model(config, args.model, args.config)
    torch_threads_from_env()
    save_npz(args.out, **encode(config, args.model, args.checkpoint, args.vocabulary))
    return 0


if __name__ == "__main__":
    run_cli(main)
