"""A real-format data set built from real photos and real text shipped with the pinned Python packages.

CC3M-format training data (a headerless `image_path,caption` CSV over sharded JPEG directories, the
caption file, two rewrite files, a held-out CSV), two ImageFolder evaluation sets, and two seeded,
randomly initialised `fp-tiny-vit` open_clip checkpoints to import as `source: checkpoint` models. Nothing
is downloaded and nothing is written for this project:

- images: crops and rescales of the photos in scikit-learn (`sklearn/datasets/images/china.jpg`,
  `flower.jpg`) and matplotlib (`mpl-data/sample_data/grace_hopper.jpg`, `Minduka_Present_Blue_Pack.png`),
  JPEG of varied sizes and qualities, greyscale and progressive among them, a few PNG;
- text: sentences of scikit-learn's dataset descriptions (`sklearn/datasets/descr/*.rst`: commas, double
  quotes) and the author fields of installed packages' METADATA that are not ASCII (e.g. snakemake's);
  captions repeat (CC3M has duplicates).

    python tests/realdata.py OUT --n-train 1024      # then: snakemake --configfile config/real_format.example.yaml

Tests build it at a dozen images (`build(tmp_path, n_train=12, ...)`).
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import os
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

EVAL_SETS = ("photos", "photos_grey")


def package_dir(name: str) -> Path:
    """An installed package's directory, found without importing it (sklearn and matplotlib are slow to import)."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def source_photos() -> dict[str, Path]:
    """The real photos shipped with scikit-learn and matplotlib, by class name."""
    sk = package_dir("sklearn") / "datasets" / "images"
    mpl = package_dir("matplotlib") / "mpl-data" / "sample_data"
    photos = {"temple": sk / "china.jpg", "flower": sk / "flower.jpg", "portrait": mpl / "grace_hopper.jpg",
              "gift box": mpl / "Minduka_Present_Blue_Pack.png"}
    missing = [str(p) for p in photos.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"photos missing from the installed packages: {missing}")
    return photos


def source_sentences() -> list[str]:
    """Real sentences (commas, quotes, non-ASCII among them), in a fixed order."""
    descr = package_dir("sklearn") / "datasets" / "descr"
    sentences: list[str] = []
    for path in sorted(descr.glob("*.rst")):
        text = re.sub(r"\s+", " ", path.read_text(encoding="utf-8"))
        for s in re.split(r"(?<=[.!?])\s+", text):
            s = s.strip()
            if 30 <= len(s) <= 160 and not s.startswith(("..", ":", "|", "=", "-", "*")) \
                    and not any(t in s for t in ("`", "::", "===")):
                sentences.append(s)
    site = package_dir("sklearn").resolve().parent
    for meta in sorted(glob.glob(str(site / "*.dist-info" / "METADATA"))):
        with open(meta, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break       # headers end at the first empty line
                key, _, value = line.partition(":")
                if key in ("Author", "Author-email", "Maintainer", "Maintainer-email") and not value.isascii():
                    sentences.append(value.strip())
    sentences = list(dict.fromkeys(sentences))
    for what, ok in (("commas", any("," in s for s in sentences)), ("quotes", any('"' in s for s in sentences)),
                     ("non-ASCII text", any(not s.isascii() for s in sentences))):
        if not ok:
            raise RuntimeError(f"the installed packages' text has no sentence with {what}")
    return sentences


def captions_for(n: int, sentences: list[str], offset: int, rng: np.random.Generator) -> list[str]:
    """n captions: sentences in turn from `offset`, every 7th a repeat of an earlier caption. The first
    captions include one with a comma, one with a double quote and one with non-ASCII text, so that even a
    dozen pairs have all three."""
    special = [next(s for s in sentences if '"' in s), next(s for s in sentences if not s.isascii()),
               next(s for s in sentences if "," in s and '"' not in s)]
    rest = [s for s in sentences if s not in special]
    out: list[str] = []
    for i in range(n):
        if i < len(special) and offset == 0:
            out.append(special[i])
        elif i % 7 == 6:
            out.append(out[int(rng.integers(0, len(out)))])
        else:
            out.append(rest[(offset + i) % len(rest)])
    return out


def _crop(img, rng: np.random.Generator, min_side: int, max_side: int):
    """A random crop (30-100 % of each side) of a PIL image, rescaled so its shorter side is in
    [min_side, max_side] (aspect ratio kept)."""
    w, h = img.size
    cw, ch = int(w * rng.uniform(0.3, 1.0)), int(h * rng.uniform(0.3, 1.0))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = img.crop((left, top, left + cw, top + ch))
    short = int(rng.integers(min_side, max_side + 1))
    scale = short / min(cw, ch)
    return crop.resize((max(1, round(cw * scale)), max(1, round(ch * scale))))


def _save(img, path: Path, index: int, rng: np.random.Generator) -> None:
    """JPEG (quality 70-95; every 5th greyscale, every 4th progressive) or, for .png paths, PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if index % 5 == 2:
        img = img.convert("L")
    if path.suffix == ".png":
        img.save(path, format="PNG")
    else:
        img.save(path, format="JPEG", quality=int(rng.integers(70, 96)), progressive=index % 4 == 1)


def write_pairs(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def build(out: str | os.PathLike, n_train: int = 12, n_heldout: int = 8, n_eval: int = 8, seed: int = 0,
          min_side: int = 24, max_side: int = 96, checkpoints: bool = True, sentence_model: bool = False) -> dict:
    """Write the data set under `out`; returns its paths (the `data` section of a config, the evaluation
    set roots, the checkpoint files, the CLIP4DM benchmark files, ...). `sentence_model`: also the tiny
    SentenceTransformer of the multilingual system (a few seconds of imports; tests that do not run that
    system leave it out)."""
    from PIL import Image

    out = Path(out)
    rng = np.random.default_rng(seed)
    photos = {name: Image.open(p).convert("RGB") for name, p in source_photos().items()}
    names = list(photos)
    sentences = source_sentences()

    def pairs(n: int, split: str, offset: int) -> list[tuple[str, str]]:
        captions = captions_for(n, sentences, offset, rng)
        rows = []
        for i in range(n):
            # CC3M-style shards of 1000; every 9th image a PNG
            rel = f"{split}/{i // 1000:05d}/{i:09d}.{'png' if i % 9 == 8 else 'jpg'}"
            _save(_crop(photos[names[int(rng.integers(0, len(names)))]], rng, min_side, max_side),
                  out / "images" / rel, i, rng)
            rows.append((rel, captions[i]))
        return rows

    train = pairs(n_train, "train", 0)
    write_pairs(out / "train.csv", train)
    (out / "captions.txt").write_text("".join(f"{c}\n" for _, c in train), encoding="utf-8")
    rewrites = []
    for k in range(2):
        path = out / f"rewrites_{k}.txt"
        path.write_text("".join(f"{c}\n" for c in captions_for(n_train, sentences, 11 * (k + 1), rng)),
                        encoding="utf-8")
        rewrites.append(str(path))
    heldout = pairs(n_heldout, "heldout", 101)
    write_pairs(out / "heldout.csv", heldout)
    roots = {}
    for set_name in EVAL_SETS:
        root = out / "eval" / set_name
        for name in names:
            for j in range(n_eval):
                img = _crop(photos[name], rng, min_side, max_side)
                if set_name == "photos_grey":   # greyscale PNGs
                    path = root / name.replace(" ", "_") / f"{j:04d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    img.convert("L").save(path, format="PNG")
                else:
                    _save(img, root / name.replace(" ", "_") / f"{j:04d}.jpg", j, rng)
        (root / "classnames.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
        if set_name == "photos_grey":
            (root / "templates.txt").write_text("a black and white photo of a {c}\n", encoding="utf-8")
        roots[set_name] = str(root)
    cifar10 = str(write_cifar_set(out / "eval" / "cifar10", photos, names, n_eval, rng))   # torchvision's format
    paths = {"train_csv": str(out / "train.csv"), "image_root": str(out / "images"),
             "captions": str(out / "captions.txt"), "heldout_csv": str(out / "heldout.csv"),
             "rewrites": rewrites, "eval_roots": roots, "cifar10": cifar10,
             "clip4dm": write_clip4dm_benchmarks(out, photos, sentences, rng, max(3, n_eval), min_side, max_side),
             "vocabulary": write_vocabulary(out / "vocabulary.txt", sentences),
             "multilingual": write_multilingual_captions(
                 out / "multilingual", {"train": [c for _, c in train], "heldout": [c for _, c in heldout]},
                 sentences),
             "root": str(out)}
    if sentence_model:
        from sentence_fixture import write_tiny_sentence_model

        paths["sentence_model"] = str(write_tiny_sentence_model(out / "sentence_model", seed=seed))
    if checkpoints:
        paths["checkpoints"] = write_checkpoints(out / "checkpoints")
    return paths


def write_cifar_set(root: Path, photos: dict, names: list[str], n_per_class: int, rng: np.random.Generator) -> Path:
    """A set in CIFAR-10's python format (tests/cifar_fixture.py) whose test split holds 32x32 crops of the
    photos, their names as the classes (not the official archive: verify_checksums false)."""
    from cifar_fixture import write_cifar10

    images, labels = [], []
    for label, name in enumerate(names):
        for _ in range(n_per_class):
            images.append(np.asarray(_crop(photos[name], rng, 32, 48).convert("RGB").resize((32, 32)), np.uint8))
            labels.append(label)
    return write_cifar10(root, images, labels, classes=names)


def _words(sentence: str) -> list[str]:
    return [w for w in re.findall(r"[A-Za-z]+", sentence) if len(w) > 3]


def write_clip4dm_benchmarks(out: Path, photos: dict, sentences: list[str], rng: np.random.Generator,
                             n_images: int, min_side: int, max_side: int) -> dict[str, str]:
    """FOIL, nocaps-FOIL and HAT files in the original formats (clip4dm/readers.py) over crops of the photos:
    several captions (references) per image, each with a foil that replaces one word by a word of another
    sentence; captions are real sentences (commas, quotes, non-ASCII, some longer than a small model's
    context). Returns {format: json path} and the image root under key "image_root"."""
    import json

    root = out / "clip4dm"
    names = list(photos)
    images = []
    for i in range(n_images):
        rel = f"images/{i:06d}.jpg"
        _save(_crop(photos[names[i % len(names)]], rng, min_side, max_side), root / rel, i, rng)
        images.append(rel)
    pool = [s for s in sentences if len(_words(s)) >= 2]

    def foiled(caption: str) -> tuple[str, str, str]:
        """(foil caption, target word, foil word): one word of the caption replaced by another's word."""
        target = _words(caption)[int(rng.integers(0, len(_words(caption))))]
        donor = _words(pool[int(rng.integers(0, len(pool)))])
        foil = next((w for w in donor if w.lower() != target.lower()), "zebra")
        return re.sub(rf"\b{re.escape(target)}\b", foil, caption, count=1), target, foil

    foil_images, annotations, nocaps, hat = [], [], [], []
    for i, rel in enumerate(images):
        foil_images.append({"id": 1000 + i, "file_name": rel, "height": 0, "width": 0})
        refs = [pool[(7 * i + r) % len(pool)] for r in range(3)]          # three references per image
        for r, caption in enumerate(refs):
            annotations.append({"id": len(annotations), "image_id": 1000 + i, "caption": caption,
                                "foil_word": "ORIG", "target_word": "ORIG", "foil": False})
            if r < 2:
                text, target, foil = foiled(caption)
                annotations.append({"id": len(annotations), "image_id": 1000 + i, "caption": text,
                                    "foil_word": foil, "target_word": target, "foil": True})
        text, target, foil = foiled(refs[0])
        nocaps.append({"image_path": rel, "baseline": refs[0], "foil": text, "replacement": [target, foil],
                       "domain": ("in-domain", "near-domain", "out-domain")[i % 3]})
        caption, hallucinated = (refs[1], "") if i % 2 else foiled(refs[1])[0::2]
        tokens = caption.split(" ")
        hat.append({"sample_id": f"hat-{i:05d}", "image_path": rel, "caption": caption,
                    "grounding": [[t, int(bool(hallucinated) and hallucinated in t)] for t in tokens]})
    files = {"foil": root / "foil_test.json", "nocaps_foil": root / "nocaps_val_foil.json", "hat": root / "hat.json"}
    files["foil"].write_text(json.dumps({"info": {"description": "FOIL-format fixture"}, "images": foil_images,
                                         "annotations": annotations}, ensure_ascii=False), encoding="utf-8")
    files["nocaps_foil"].write_text(json.dumps(nocaps, ensure_ascii=False), encoding="utf-8")
    files["hat"].write_text(json.dumps(hat, ensure_ascii=False), encoding="utf-8")
    return {**{k: str(v) for k, v in files.items()}, "image_root": str(root)}


def write_vocabulary(path: Path, sentences: list[str], k: int = 400) -> str:
    """A SpLiCE-format vocabulary file (one concept per line, least frequent first): the k most frequent
    lower-case words of the sentences."""
    from collections import Counter

    counts = Counter(w.lower() for s in sentences for w in _words(s))
    top = [w for w, _ in counts.most_common(k)]
    path.write_text("".join(f"{w}\n" for w in reversed(top)), encoding="utf-8")
    return str(path)


def example_config(data: dict) -> dict:
    """config/real_format.example.yaml (parsed) pointed at a data set from build(): every path under its
    `real_format_data/` moved to the data set's directory."""
    import yaml

    raw = yaml.safe_load((REPO / "config" / "real_format.example.yaml").read_text())

    def moved(value):
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [moved(v) for v in value]
        if isinstance(value, str) and value.startswith("real_format_data/"):
            return str(Path(data["root"]) / value[len("real_format_data/"):])
        return value

    return moved(raw)


def write_multilingual_captions(out: Path, captions: dict[str, list[str]], sentences: list[str],
                                languages: tuple[str, ...] = ("en", "it", "de")) -> dict[str, str]:
    """One CSV per split (id,language,caption): English is the pair's own caption, the other languages
    sentences of their own (the fixture checks formats and plumbing, not translation)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, english in captions.items():
        rows = [("id", "language", "caption")]
        for k, lang in enumerate(languages):
            for i, caption in enumerate(english):
                rows.append((str(i), lang, caption if k == 0 else sentences[(13 * k + 5 * i) % len(sentences)]))
        files[split] = str(out / f"{split}.csv")
        write_pairs(Path(files[split]), rows)
    return files


def write_checkpoints(out: Path, arch: str = "fp-tiny-vit") -> dict[str, str]:
    """Two seeded, randomly initialised open_clip state dicts of `arch` (clip: seed 0, laclip: seed 1),
    the format of an open_clip checkpoint file (`source: checkpoint`)."""
    import torch

    from workflow_scripts.models.clip import build_model

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for seed, name in enumerate(("clip", "laclip")):
        torch.manual_seed(seed)
        files[name] = str(out / f"{name}.pt")
        buf = io.BytesIO()
        torch.save({"state_dict": build_model(arch).state_dict()}, buf)
        Path(files[name]).write_bytes(buf.getvalue())
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output directory (config/real_format.example.yaml expects real_format_data)")
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--n-heldout", type=int, default=128)
    ap.add_argument("--n-eval", type=int, default=25, help="images per class per evaluation set")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    paths = build(args.out, args.n_train, args.n_heldout, args.n_eval, args.seed, sentence_model=True)
    print(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
