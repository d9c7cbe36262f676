"""Controlled caption misalignment (rules/misalign.smk): caption preprocessing, TF-IDF neighbours, swaps.

- `captions`: reading and normalising caption files.
- `tfidf`: the original's TF-IDF matrix.
- `exact_search`: exact scores, the exact top-K kernels (inverted-index scan, pruned search).
- `similarity`: top-K neighbours of every caption on a chosen backend (cpu, sparse_dot_topn, cupy, scipy);
  `python -m workflow_scripts.misalign.similarity`.
- `pairing`: the original's similarity and random swap loops, exactly (disjoint pairs per Cs).
- `swap`: swapped caption files, manifests and training CSVs; `python -m workflow_scripts.misalign.swap`.
- `effective`: what a swap actually changed (effective misalignment per attribute).
"""
