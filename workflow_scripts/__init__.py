"""Feature-purity workflow: an importable library with one CLI per stage.

One package per stage, mirroring rules/<stage>.smk: `world`, `misalign`, `models`, `finetune`, `evaluate`,
`report`, `validation`; the seed systems `clip4dm`, `sparse`, `multilingual`; shared plumbing in `common`;
`cluster` for SLURM. Modules hold one concept each as plain functions over arrays;
`python -m workflow_scripts.<package>.<module> --help` runs a stage on its own (docs/architecture.md).
"""

__version__ = "0.1.0"
