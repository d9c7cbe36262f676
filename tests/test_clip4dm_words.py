"""BPE tokens to words (peers.md §3.3) on tricky captions, against a plain re-implementation of the
original's walk (encode each space/'.'/','-word alone, consume that many tokens of the full encoding)."""

from __future__ import annotations


import numpy as np
import pytest

from workflow_scripts.errors import InputError

TEMPLATE = "A photo depicts "


@pytest.fixture(scope="module")
def tokenizer():
    from workflow_scripts.models import get_tokenizer

    return get_tokenizer("fp-tiny-vit")


def original_walk(tokenizer, caption: str, scores_of_tokens: np.ndarray):
    """The original's tokenizer2space: words by spaces with '.' and ',' apart, counts by encoding each word
    alone, the template's 3 words dropped; mean score per word. scores_of_tokens excludes SOT/EOT."""
    text = (TEMPLATE + caption).replace(".", " . ").replace(",", " , ")
    words = text.split()
    out, pos = [], 0
    for w in words:
        n = len(tokenizer.encode(w))
        out.append((w.lower(), float(np.mean(scores_of_tokens[pos:pos + n]))))
        pos += n
    return out[3:]


@pytest.mark.parametrize("caption", [
    "a big, red-ish circle.", "photo of a cobalt star", "it's an étoile, très jolie.",
    "stock image: emerald rhombi", "two   green    crosses", "A Circle,Square.Triangle",
])
def test_words_match_the_original_walk(tokenizer, caption):
    from workflow_scripts.clip4dm.words import tokenize_caption, word_scores

    item = tokenize_caption(tokenizer, caption, TEMPLATE, 77)
    assert np.array_equal(item.tokens, tokenizer([TEMPLATE + caption], context_length=77)[0].numpy())  # model input
    assert item.tokens[item.eot] == tokenizer.eot_token_id and item.eot == int(np.argmax(item.tokens))
    rng = np.random.default_rng(0)
    token_scores = rng.normal(size=77)
    ours = word_scores(token_scores[None], [item])[0]
    ref = original_walk(tokenizer, caption, token_scores[1:item.eot])
    assert item.words == [w for w, _ in ref]
    np.testing.assert_allclose(ours, [s for _, s in ref], rtol=1e-12)


def test_multi_token_word_is_the_mean_of_its_tokens(tokenizer):
    from workflow_scripts.clip4dm.words import tokenize_caption, word_scores

    item = tokenize_caption(tokenizer, "red-ish", TEMPLATE, 77)
    assert item.words == ["red-ish"]
    positions = np.flatnonzero(item.word_of_token == 0)
    assert len(positions) == 3                                 # red, -, ish
    scores = np.zeros(77)
    scores[positions] = [1.0, 2.0, 6.0]
    assert word_scores(scores[None], [item])[0][0] == pytest.approx(3.0)


def test_punctuation_run_does_not_shift_later_words(tokenizer):
    """'...' is one BPE chunk of the full text but three '.' words: the 2nd and 3rd get no score (NaN)
    instead of shifting every later word, as the original's count walk would."""
    from workflow_scripts.clip4dm.words import tokenize_caption, word_scores

    item = tokenize_caption(tokenizer, "three... stars", TEMPLATE, 77)
    assert item.words == ["three", ".", ".", ".", "stars"]
    scores = np.arange(77, dtype=float)
    w = word_scores(scores[None], [item])[0]
    stars = np.flatnonzero(item.word_of_token == 4)
    assert np.isnan(w[2]) and np.isnan(w[3]) and w[4] == pytest.approx(scores[stars].mean())


def test_truncation_keeps_whole_words_only(tokenizer):
    from workflow_scripts.clip4dm.words import tokenize_caption

    caption = "a red-ish circle in the top left on a striped background"
    full = tokenizer([TEMPLATE + caption], context_length=77)[0].numpy()
    n_tokens = int(np.argmax(full)) + 1
    for context in range(8, n_tokens):
        item = tokenize_caption(tokenizer, caption, TEMPLATE, context, truncate=True)
        assert item.truncated
        assert np.array_equal(item.tokens, tokenizer([TEMPLATE + caption], context_length=context)[0].numpy())
        kept = item.word_of_token[item.word_of_token >= 0]
        # every kept word has all its tokens (the word cut by EOT and later ones are dropped)
        complete = tokenize_caption(tokenizer, caption, TEMPLATE, 77)
        for w in range(len(item.words)):
            assert (kept == w).sum() == (complete.word_of_token == w).sum()
        assert item.words == complete.words[:len(item.words)]
        assert item.eot == context - 1


def test_bad_captions_are_named(tokenizer):
    from workflow_scripts.clip4dm.words import tokenize_caption

    with pytest.raises(InputError, match="captions.txt:7: empty caption"):
        tokenize_caption(tokenizer, "   ", TEMPLATE, 24, where="captions.txt:7")
    with pytest.raises(InputError, match=r"captions.txt:9: .*longer than the model's context of 12"):
        tokenize_caption(tokenizer, "a red circle in the top left on a striped background", TEMPLATE, 12,
                         where="captions.txt:9")
