"""The embedded synthetic image-caption world (rules/world.smk).

- `synthetic`: scenes, rendering, web-like human captions, LaCLIP-style rewrites that see only the caption,
  evaluation sets; `python -m workflow_scripts.world.synthetic` writes the world.
"""
