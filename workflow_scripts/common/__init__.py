"""Shared plumbing every stage uses (rules/common.smk).

- `config`: the JSON-schema validated config (config.schema.yaml), run names and the settings file.
- `io`: atomic writes, tables, arrays, logging, progress bars, seeds, the CLI wrapper.
- `data`: readers of the on-disk formats (training CSVs, caption files, images, image folders, JSON).
- `evalsets`: the evaluation sets (embedded, image folder, torchvision) behind one interface.
- `distributed`: devices and the torchrun process group.
- `intervals`: confidence intervals (t, Wilson, bootstrap, combined, Fisher z).
- `errors`: `InputError`, the one exception bad input raises.
"""
