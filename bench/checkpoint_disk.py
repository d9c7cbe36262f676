"""Benchmark: disk use of a fine-tune's checkpoint, projection-only (ours) against the whole model.

Baseline (named, measured in the same run): the whole-model checkpoint a fine-tune used to write (every
tower parameter, as the original train.py saves it). Ours: the two projection matrices plus the pretrained
checkpoint's identity (path + sha256), from which `python -m workflow_scripts.models.checkpoints CKPT --out FULL.pt`
rebuilds the whole model on demand. Both written with the fine-tune's own `checkpoints.save_checkpoint`,
for the study's architecture (ViT-B/16, the real-data example) and the embedded one, and scaled to the
real-data example's fine-tune count.

    python bench/checkpoint_disk.py [--archs ViT-B-16 fp-tiny-vit] [--finetunes 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflow_scripts.models.checkpoints import save_checkpoint  # noqa: E402
from workflow_scripts.models.clip import build_model, projection_parameters  # noqa: E402


def sizes(arch: str, directory: Path) -> tuple[int, int]:
    """(bytes of the whole-model checkpoint, bytes of the projection-only one) for a seeded model."""
    torch.manual_seed(0)
    model = build_model(arch)
    full = save_checkpoint(directory / f"{arch}.full.pt", model.state_dict(), epoch=1,
                           meta={"model": arch, "arch": arch})
    meta = {"model": arch, "arch": arch, "contents": "projections", "pretrained": "results/pretrain/x/checkpoint.pt",
            "pretrained_sha256": "0" * 64}
    proj = save_checkpoint(directory / f"{arch}.proj.pt", dict(projection_parameters(model)), epoch=1, meta=meta)
    return full.stat().st_size, proj.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["ViT-B-16", "fp-tiny-vit"])
    parser.add_argument("--finetunes", type=int, default=60, help="fine-tunes of a study (the real-data example: 60)")
    args = parser.parse_args()
    print(f"{'arch':<14}{'whole model (baseline)':>24}{'projection-only':>18}{'ratio':>9}"
          f"{f'x{args.finetunes} whole':>14}{f'x{args.finetunes} ours':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            full, proj = sizes(arch, Path(tmp))
            print(f"{arch:<14}{full / 2**20:>21.1f} MB{proj / 2**20:>15.2f} MB{full / proj:>8.0f}x"
                  f"{args.finetunes * full / 2**30:>11.1f} GB{args.finetunes * proj / 2**20:>9.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
