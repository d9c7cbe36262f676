"""Sparse concept decompositions of CLIP embeddings (SpLiCE, peers.md section 5): a concept dictionary
from the training captions, centring, a batched non-negative Lasso solver, and the per-checkpoint
evaluation (zero-shot accuracy of recomposed embeddings against l0, memory, top concepts)."""
