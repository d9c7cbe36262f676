"""CLIP4DM: dense (word-level) misalignment detection from gradient attributions (seed 004).

Modules, one concept each:
- `attention`: the last text blocks' attention computed explicitly, exposing the probability tensor that
  multiplies V (open_clip's blocks call nn.MultiheadAttention with need_weights=False).
- `attributions`: batched grad x attention-probability attributions of the image-text cosine (EOT row).
- `words`: BPE tokens -> words (clip4dm.words: the original's space tokenisation and token walk, or ours on
  the cleaned text), template words dropped; the threshold mode's punctuation filter.
- `scores`: CLIPScore, F-CLIPScore by mode (threshold sum, most-negative word, most negative span's mean;
  clip4dm.fclipscore), RefCLIPScore, epsilon calibration, threshold spans.
- `foils`: FOIL-style one-word foils on the embedded world's held-out images.
- `readers`: the FOIL / nocaps-FOIL / HAT JSON formats (local files only).
- `metrics`: AP / AUROC, localisation accuracy, span matching, misalignment-rate estimation.
- `token_table`: every scored caption tokenized once per model (its word map, whether it was cut), stored in the pack.
- `pipeline`: the per-model pack, loading a model and image embeddings, scoring caption lists (shared by the CLIs).
- `render`: the figures and example captions of the report (used by `summarise`).
- CLIs: `prepare` (the per-model pack, epsilon calibration), `detect`, `localise`, `realdata`, `summarise`.

docs/clip4dm.md: the method, running on real files, the remaining deviations from the original code.
"""
