"""Feature-purity workflow: an importable library with one CLI per stage.

Each module holds one concept (world, data, captions, similarity, misalign, models, pretrain,
features, finetune, purity, zeroshot, pruning, aggregate, figures) as plain functions over arrays;
`python -m workflow_scripts.<module> --help` runs a stage on its own.
"""

__version__ = "0.1.0"
