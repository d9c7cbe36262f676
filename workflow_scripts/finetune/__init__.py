"""The treatment (rules/finetune.smk): projection-only fine-tuning on (mis)aligned pairs.

- `features`: the frozen towers' feature cache; `python -m workflow_scripts.finetune.features`.
- `train`: the fine-tune loop (CLIP loss, optional orthogonality penalty, resume); `python -m
  workflow_scripts.finetune.train`.
- `adamw`: AdamW over the projection parameters (its state in resume files).
- `orthogonality_arm`: the Exp 3 treatment arm's settings table.
"""
