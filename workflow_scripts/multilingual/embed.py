"""Cache a multilingual model's frozen embeddings once: images and every language's captions of the
training and held-out images, plus zero-shot classifiers per language; the alignment jobs then train on
these arrays only.

One .npz per model with keys `<split>::image` (N, d) and `<split>::ids`, `<split>::<lang>::text` (n, d)
and `<split>::<lang>::ids` (the image row of each caption), `zs::<set>::image`, `zs::<set>::labels`,
`zs::<set>::<lang>::classes` (one prompt embedding per class). All rows unit-norm, float32.

- source embedded: captions encoded by the model built in the DAG (workflow_scripts.multilingual.encoder),
  images from the base model's caches (multilingual.images).
- source files (real data): text embeddings computed elsewhere (e.g. a sentence-transformers model) read
  from local .npz (arrays `id`, `embedding`) or .parquet files (an `id` column, then either one list column
  `embedding` or the numeric columns); ids are rows of data.train_csv / data.heldout_csv. Images come from
  the base model (open_clip towers by config) through its caches. Nothing is downloaded.
- source sentence_transformers (real data): the captions of multilingual.captions (one CSV per split,
  `id,language,caption`, ids = rows of data.train_csv / data.heldout_csv; see
  workflow_scripts.multilingual.sentence_tower) encoded here by the SentenceTransformer saved in the local
  directory multilingual.models.<name>.path, offline; images as for files. The text width may differ from
  the image width.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..common.errors import InputError
from ..common.io import run_cli, save_npz, setup_logging
from .images import SEP, eval_image_embeddings, normalize, train_image_embeddings
from .sentence_tower import encode_distinct

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- files (real data)


def read_embedding_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64, embeddings float32 (n, d)) of an .npz (id, embedding) or .parquet (id + embedding) file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: embedding file not found")
    if path.suffix == ".npz":
        from ..common.io import load_npz

        data = load_npz(path)
        missing = [k for k in ("id", "embedding") if k not in data]
        if missing:
            raise InputError(f"{path}: lacks arrays {missing} (expected 'id' and 'embedding')")
        ids, emb = data["id"], data["embedding"]
    elif path.suffix == ".parquet":
        import pandas as pd

        df = pd.read_parquet(path)
        if "id" not in df.columns:
            raise InputError(f"{path}: no 'id' column (columns: {list(df.columns)[:8]})")
        ids = df["id"].to_numpy()
        if "embedding" in df.columns:
            emb = np.stack(df["embedding"].to_numpy()) if len(df) else np.zeros((0, 0))
        else:
            emb = df.drop(columns=["id"]).to_numpy()
    else:
        raise InputError(f"{path}: unsupported embedding file (use .npz or .parquet)")
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"{path}: ids must be integers (rows of the image CSV), got {ids.dtype}")
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or len(emb) != len(ids):
        raise InputError(f"{path}: {len(ids)} ids but embeddings of shape {emb.shape}")
    return ids.astype(np.int64), emb


def check_caption_ids(path: str, lang: str, ids: np.ndarray, n_images: int) -> None:
    """A language's caption ids must be non-empty, unique, and rows of the image set."""
    if len(ids) == 0:
        raise InputError(f"{path}: language {lang!r} has no captions")
    bad = ids[(ids < 0) | (ids >= n_images)]
    if len(bad):
        raise InputError(f"{path}: id {int(bad[0])} (language {lang!r}) is not an image id (images 0..{n_images - 1}); "
                         f"{len(bad)} such ids: the image and text embedding files do not match")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"{path}: id {int(uniq[counts > 1][0])} appears more than once (language {lang!r})")


def text_arrays(split: str, per_language: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """`<split>::<lang>::{text,ids}` from each language's (image ids, text embeddings): unit rows, one width."""
    out = {}
    for lang, (ids, emb) in per_language.items():
        out[f"{split}{SEP}{lang}{SEP}ids"] = np.asarray(ids, dtype=np.int64)
        out[f"{split}{SEP}{lang}{SEP}text"] = normalize(emb)
    dims = {v.shape[1] for k, v in out.items() if k.endswith("text")}
    if len(dims) > 1:
        raise InputError(f"{split}: text embeddings of different widths {sorted(dims)}")
    return out


def text_from_files(files: dict[str, str], languages: Sequence[str], n_images: int, split: str) -> dict:
    """`<split>::<lang>::{text,ids}` arrays from one embedding file per language."""
    per_language = {}
    for lang in languages:
        if lang not in files:
            raise InputError(f"multilingual.models: key 'files.{split}.{lang}': no text embedding file for language {lang!r}")
        ids, emb = read_embedding_file(files[lang])
        check_caption_ids(files[lang], lang, ids, n_images)
        per_language[lang] = ids, emb
    return text_arrays(split, per_language)


# ----------------------------------------------------------------------------- sentence_transformers


def text_from_sentences(name: str, spec: dict, captions: dict[str, str], n_images: dict[str, int],
                        languages: Sequence[str]) -> dict:
    """`<split>::<lang>::{text,ids}` of every caption of each split's caption CSV (`captions`, split -> path),
    encoded by model `name`'s SentenceTransformer; the CSVs are checked before the model loads."""
    from .sentence_tower import encode, load_sentence_model, read_caption_table

    if set(captions) != set(n_images):
        raise InputError(f"multilingual.models.{name}: source sentence_transformers needs the caption CSVs of "
                         f"{sorted(n_images)} (multilingual.captions; --train-captions, --heldout-captions)")
    tables = {split: read_caption_table(captions[split], split, languages, n) for split, n in n_images.items()}
    model = load_sentence_model(spec["path"], f"multilingual.models.{name}.path")
    out = {}
    for split, table in tables.items():
        out.update(text_arrays(split, {lang: (ids, encode(model, texts, spec["batch_size"]))
                                       for lang, (ids, texts) in table.items()}))
    return out


# ----------------------------------------------------------------------------- embedded model


def text_from_encoder(encode, table, languages: Sequence[str], split: str) -> dict:
    """`<split>::<lang>::{text,ids}` of every caption in the table (one per image and language)."""
    per_language = {}
    for lang in languages:
        texts = table[lang].tolist()
        if not texts:
            raise InputError(f"{split}: language {lang!r} has no captions")
        per_language[lang] = np.arange(len(texts)), encode_distinct(encode, texts)
    return text_arrays(split, per_language)


def zero_shot_arrays(encode, eval_features: dict, projections: str, sets: Sequence[str],
                     languages: Sequence[str]) -> dict:
    """Per world set and language: image embeddings, labels and one prompt embedding per class
    (English: the set's own templates, averaged; others: multilingual.lexicon.class_prompt)."""
    from ..world.synthetic import EVAL_SETS
    from ..evaluate.zeroshot import zero_shot_classifier
    from .lexicon import class_prompt

    out = {}
    for name in sets:
        if name not in EVAL_SETS or EVAL_SETS[name][0] not in ("shape", "colour"):
            raise InputError(f"multilingual.evaluate.zero_shot_sets: {name!r} has no multilingual prompts "
                             "(shape and colour sets only)")
        classnames = eval_features[f"{name}{SEP}classnames"].tolist()
        out[f"zs{SEP}{name}{SEP}image"] = eval_image_embeddings(eval_features, projections, name)
        out[f"zs{SEP}{name}{SEP}labels"] = eval_features[f"{name}{SEP}labels"]
        for lang in languages:
            if lang == "en":
                classes = zero_shot_classifier(encode, classnames, eval_features[f"{name}{SEP}templates"].tolist()).T
            else:
                classes = encode([class_prompt(lang, EVAL_SETS[name][0], c) for c in classnames])
            out[f"zs{SEP}{name}{SEP}{lang}{SEP}classes"] = normalize(classes)
    return out


def embed(config: dict, name: str, out: str, captions: dict[str, str], features: str, eval_features_path: str,
          projections: str, checkpoint: str | None) -> dict:
    """Write the embeddings file of multilingual model `name` (see the module docstring)."""
    import pandas as pd

    from ..common.data import read_pairs_csv
    from ..common.io import load_npz

    ml = config["multilingual"]
    spec = ml["models"][name]
    languages = ml["languages"]
    eval_features = load_npz(eval_features_path)
    arrays: dict[str, np.ndarray] = {}
    if spec["source"] == "embedded":
        import torch

        from ..models.encode import text_encoder
        from ..models.clip import get_tokenizer, load_model

        base = config["models"][spec["base"]]
        if not checkpoint:
            raise InputError(f"multilingual.models.{name}: source embedded needs the encoder checkpoint")
        model = load_model(base, checkpoint, name)
        encode = text_encoder(model, get_tokenizer(base["arch"]), torch.device("cpu"), batch_size=1024)
        tables = {split: pd.read_parquet(path) for split, path in captions.items()}
        arrays["train::image"] = train_image_embeddings(features, projections, tables["train"]["image"].tolist())
        arrays["heldout::image"] = eval_image_embeddings(eval_features, projections, "heldout_pairs",
                                                         len(tables["heldout"]))
        for split, table in tables.items():
            arrays.update(text_from_encoder(encode, table, languages, split))
        arrays.update(zero_shot_arrays(encode, eval_features, projections, ml["evaluate"]["zero_shot_sets"], languages))
    else:
        paths = read_pairs_csv(config["data"]["train_csv"])[0]
        arrays["train::image"] = train_image_embeddings(features, projections, paths)
        arrays["heldout::image"] = eval_image_embeddings(eval_features, projections, "heldout_pairs")
        n_images = {split: len(arrays[f"{split}{SEP}image"]) for split in ("train", "heldout")}
        if spec["source"] == "files":
            for split, n in n_images.items():
                arrays.update(text_from_files(spec["files"][split], languages, n, split))
        else:
            arrays.update(text_from_sentences(name, spec, captions, n_images, languages))
    for split in ("train", "heldout"):
        arrays[f"{split}{SEP}ids"] = np.arange(len(arrays[f"{split}{SEP}image"]), dtype=np.int64)
    save_npz(out, **arrays)
    log.info("%s: %s", name, {k: v.shape for k, v in arrays.items() if k.endswith(("image", "text"))})
    return arrays


def main(argv: list[str] | None = None) -> int:
    from ..common.config import load_config

    ap = argparse.ArgumentParser(description="Frozen multilingual embeddings of one model (images, captions, prompts).")
    ap.add_argument("--config", required=True)
    ap.add_argument("--model", required=True, help="a multilingual.models key")
    ap.add_argument("--train-captions", help="caption table (embedded: parquet; sentence_transformers: CSV)")
    ap.add_argument("--heldout-captions", help="caption table (embedded: parquet; sentence_transformers: CSV)")
    ap.add_argument("--checkpoint", help="the multilingual encoder (embedded source)")
    ap.add_argument("--features", required=True, help="the base model's feature cache index")
    ap.add_argument("--eval-features", required=True, help="the base model's evaluation features")
    ap.add_argument("--projections", required=True, help="the base model's projections.npz")
    ap.add_argument("--out", required=True)
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    config = load_config(args.config)
    if args.model not in config["multilingual"]["models"]:
        raise InputError(f"{args.config}: unknown multilingual model {args.model!r}; known: "
                         f"{sorted(config['multilingual']['models'])}")
    captions = {k: v for k, v in (("train", args.train_captions), ("heldout", args.heldout_captions)) if v}
    embed(config, args.model, args.out, captions, args.features, args.eval_features, args.projections, args.checkpoint)
    return 0


if __name__ == "__main__":
    run_cli(main)
