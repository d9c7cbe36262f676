"""Models (rules/models.smk): one layer over open_clip, checkpoints, downloads, in-DAG pretraining.

- `clip`: build, load, convert and take apart every model (towers, projections, preprocessing);
  `python -m workflow_scripts.models.clip` imports a checkpoint. Embedded architectures in `model_configs/`.
- `checkpoints`: atomic, hashed, `weights_only` checkpoints.
- `fetch`: checksum-verified downloads of configured weights.
- `pretrain`: from-scratch CLIP / LaCLIP pretraining of the embedded models.
"""
