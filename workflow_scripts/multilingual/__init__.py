"""Multilingual alignment through the image pivot (seed 003): captions in several languages drawn
independently from each image's scene, a frozen image tower with a text encoder aligned mostly for
English, a light alignment head trained on cached embeddings, and retrieval / zero-shot / diagnostics
before and after alignment. Modules: lexicon, world, encoder, embed, head, align, metrics, evaluate, report.
"""
