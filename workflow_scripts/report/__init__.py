"""Tables and figures of the report (rules/report.smk).

- `aggregate`: Exp 1 / Exp 3 tables with intervals and reference levels; `python -m
  workflow_scripts.report.aggregate`.
- `replicates`: per-replicate views (every pretraining and fine-tune replicate, projection drift,
  purity-accuracy association within groups).
- `figures`: the report's figures; `python -m workflow_scripts.report.figures`.
"""
