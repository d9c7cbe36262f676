"""Evaluation of every checkpoint (rules/evaluate.smk).

- `run`: evaluation features and projections -> purity, zero-shot and diagnostics tables;
  `python -m workflow_scripts.evaluate.run {features,projections}`.
- `purity`: the projections' neuron purity (mean |cosine| of rows) and its random reference.
- `zeroshot`: zero-shot classifiers, top-1 and silhouette.
- `pruning`: Exp 2's neuron-pruning sweeps; `python -m workflow_scripts.evaluate.pruning`.
"""
