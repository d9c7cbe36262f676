"""A tiny SentenceTransformer (random BERT, mean pooling, L2 normalisation) built and saved offline, for
the tests of the sentence_transformers multilingual source: nothing is downloaded, it takes well under a
second and the same seed gives the same weights."""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """a an the of on in and with is are one two three four five red green blue yellow circle square
triangle star big small left right top bottom photo picture image un una il la lo le gli di e con sopra sotto
rosso verde blu giallo cerchio quadrato triangolo ein eine der die das und mit auf rot gruen grün blau gelb
kreis quadrat dreieck links rechts""".split()
NON_ASCII = "àèéìòùäöüß"


def vocabulary() -> list[str]:
    """Special tokens, words, then every letter alone and as a `##` continuation (so any lowercase word of
    these letters tokenises without [UNK]), punctuation."""
    letters = list(string.ascii_lowercase + NON_ASCII)
    pieces = SPECIAL + WORDS + letters + [f"##{c}" for c in letters] + list(string.punctuation)
    return list(dict.fromkeys(pieces))


def write_tiny_bert(out_dir: Path, seed: int = 0, dim: int = 32) -> Path:
    """A random tiny BERT and its word-piece tokenizer saved to `out_dir` (created), as a HF checkpoint."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = out_dir / "vocab.txt"
    vocab.write_text("\n".join(vocabulary()) + "\n", encoding="utf-8")
    config = BertConfig(vocab_size=len(vocabulary()), hidden_size=dim, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(seed)
    BertModel(config).eval().save_pretrained(out_dir)
    # transformers 5 takes the vocabulary file as `vocab` (`vocab_file` is silently ignored: all [UNK])
    BertTokenizerFast(vocab=str(vocab), do_lower_case=True, strip_accents=False,
                      model_max_length=64).save_pretrained(out_dir)
    return out_dir


def write_tiny_sentence_model(out_dir: Path, seed: int = 0, dim: int = 32) -> Path:
    """Build a random tiny BERT SentenceTransformer, save it to `out_dir` (created) and return `out_dir`.
    The BERT and its tokenizer go through a temporary subfolder first, as a real checkpoint would."""
    import tempfile

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        bert = write_tiny_bert(Path(tmp) / "bert", seed, dim)
        layers = [modules.Transformer(str(bert), max_seq_length=64), modules.Pooling(dim, "mean"), modules.Normalize()]
        SentenceTransformer(modules=layers, device="cpu").save(str(out_dir))
    return out_dir
