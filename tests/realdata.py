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
          min_side: int = 24, max_side: int = 96, checkpoints: bool = True) -> dict:
    """Write the data set under `out`; returns its paths (the `data` section of a config, the evaluation
    set roots, the checkpoint files)."""
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
    write_pairs(out / "heldout.csv", pairs(n_heldout, "heldout", 101))
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
    paths = {"train_csv": str(out / "train.csv"), "image_root": str(out / "images"),
             "captions": str(out / "captions.txt"), "heldout_csv": str(out / "heldout.csv"),
             "rewrites": rewrites, "eval_roots": roots}
    if checkpoints:
        paths["checkpoints"] = write_checkpoints(out / "checkpoints")
    return paths


def example_config(data: dict) -> dict:
    """config/real_format.example.yaml (parsed) pointed at a data set from build(): its data files and the
    evaluation sets' roots (the models' checkpoints are the caller's)."""
    import yaml

    raw = yaml.safe_load((REPO / "config" / "real_format.example.yaml").read_text())
    raw["data"].update({k: data[k] for k in ("train_csv", "image_root", "captions", "rewrites")})
    for name, root in data["eval_roots"].items():
        raw["evaluate"]["sets"][name]["root"] = root
    return raw


def write_checkpoints(out: Path, arch: str = "fp-tiny-vit") -> dict[str, str]:
    """Two seeded, randomly initialised open_clip state dicts of `arch` (clip: seed 0, laclip: seed 1),
    the format of an open_clip checkpoint file (`source: checkpoint`)."""
    import torch

    from workflow_scripts.models import build_model

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
    paths = build(args.out, args.n_train, args.n_heldout, args.n_eval, args.seed)
    print(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
