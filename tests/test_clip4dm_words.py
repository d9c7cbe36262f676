"""BPE tokens to words (peers.md §3.3) on tricky captions: the default `original` rule against the plain
re-implementation of the original's space_tokenize / tokenizer2space / aggregation (clip4dm_reference.py),
the `cleaned` rule (ours, no shift after punctuation runs), truncation and the punctuation filters."""

from __future__ import annotations

import numpy as np
import pytest
from clip4dm_reference import ORIGINAL_PUNCTUATION, word_attributions

from workflow_scripts.common.errors import InputError

TEMPLATE = "A photo depicts "
TRICKY = [
    "a big, red-ish circle.", "photo of a cobalt star", "it's an étoile, très jolie.",
    "stock image: emerald rhombi", "two   green    crosses", "A Circle,Square.Triangle",
    "a red\tcircle and a dog\tand cat", "three... stars!! wow!. ok?!", "naïve café &amp; İstanbul",
    "(a) * # - & / ' —", "x_y t-shirt, 3.5 km", "\ttabbed start", "trailing space ",
]


@pytest.fixture(scope="module")
def tokenizer():
    from workflow_scripts.models.clip import get_tokenizer

    return get_tokenizer("fp-tiny-vit")


@pytest.mark.parametrize("caption", TRICKY)
def test_original_rule_equals_the_original_walk(tokenizer, caption):
    """Words and per-word means equal the original's on every tricky caption: tabs inside words, punctuation
    runs (which shift later words in the original), multi-token and non-ASCII words."""
    from workflow_scripts.clip4dm.words import tokenize_caption, word_scores

    item = tokenize_caption(tokenizer, caption, TEMPLATE, 77)
    assert np.array_equal(item.tokens, tokenizer([TEMPLATE + caption], context_length=77)[0].numpy())  # model input
    assert item.tokens[item.eot] == tokenizer.eot_token_id and item.eot == int(np.argmax(item.tokens))
    token_scores = np.random.default_rng(0).normal(size=77)
    ours = word_scores(token_scores[None], [item])[0]
    ref = word_attributions(tokenizer, TEMPLATE + caption, list(token_scores[1:item.eot]), TEMPLATE)
    assert item.words == [w for w, _ in ref]
    np.testing.assert_allclose(ours, [s for _, s in ref], rtol=1e-12, atol=0)


def test_original_rule_keeps_a_tab_inside_a_word_and_shifts_after_a_run(tokenizer):
    from workflow_scripts.clip4dm.words import tokenize_caption

    assert tokenize_caption(tokenizer, "a dog\tand cat", TEMPLATE, 77).words == ["a", "dog\tand", "cat"]
    # "..." is one BPE token of the full text but three "." words: the 2nd "." takes "stars"' token and
    # "stars" gets none (dropped), as in the original
    assert tokenize_caption(tokenizer, "three... stars", TEMPLATE, 77).words == ["three", ".", "."]


@pytest.mark.parametrize("context", [8, 9, 10, 11, 12, 14])
def test_original_rule_truncation_equals_the_original(tokenizer, context):
    """Cut to the context as open_clip cuts it: the tokens past it have no score, a word cut in the middle
    keeps the mean of its tokens that fit (the original zips the words' tokens with the truncated scores)."""
    from workflow_scripts.clip4dm.words import tokenize_caption, word_scores

    caption = "a red-ish circle in the top left on a striped background"
    item = tokenize_caption(tokenizer, caption, TEMPLATE, context, truncate=True)
    assert item.truncated and item.eot == context - 1
    assert np.array_equal(item.tokens, tokenizer([TEMPLATE + caption], context_length=context)[0].numpy())
    token_scores = np.random.default_rng(1).normal(size=context)
    ref = word_attributions(tokenizer, TEMPLATE + caption, list(token_scores[1:item.eot]), TEMPLATE)
    assert item.words == [w for w, _ in ref]
    np.testing.assert_allclose(word_scores(token_scores[None], [item])[0], [s for _, s in ref], rtol=1e-12)


def test_cleaned_rule_splits_on_any_whitespace_and_does_not_shift(tokenizer):
    """The cleaned rule (ours): the cleaned text split on any whitespace; '...' leaves the 2nd and 3rd '.'
    without a score (NaN) instead of shifting every later word."""
    from workflow_scripts.clip4dm.words import tokenize_caption, word_scores

    assert tokenize_caption(tokenizer, "a dog\tand Cat", TEMPLATE, 77, rule="cleaned").words == \
        ["a", "dog", "and", "cat"]
    item = tokenize_caption(tokenizer, "three... stars", TEMPLATE, 77, rule="cleaned")
    assert item.words == ["three", ".", ".", ".", "stars"]
    scores = np.arange(77, dtype=float)
    w = word_scores(scores[None], [item])[0]
    stars = np.flatnonzero(item.word_of_token == 4)
    assert np.isnan(w[2]) and np.isnan(w[3]) and w[4] == pytest.approx(scores[stars].mean())


def test_cleaned_rule_truncation_keeps_whole_words_only(tokenizer):
    from workflow_scripts.clip4dm.words import tokenize_caption

    caption = "a red-ish circle in the top left on a striped background"
    full = tokenizer([TEMPLATE + caption], context_length=77)[0].numpy()
    complete = tokenize_caption(tokenizer, caption, TEMPLATE, 77, rule="cleaned")
    for context in range(8, int(np.argmax(full)) + 1):
        item = tokenize_caption(tokenizer, caption, TEMPLATE, context, truncate=True, rule="cleaned")
        assert item.truncated and item.eot == context - 1
        assert np.array_equal(item.tokens, tokenizer([TEMPLATE + caption], context_length=context)[0].numpy())
        kept = item.word_of_token[item.word_of_token >= 0]
        for w in range(len(item.words)):       # every kept word has all its tokens
            assert (kept == w).sum() == (complete.word_of_token == w).sum()
        assert item.words == complete.words[:len(item.words)]


def test_multi_token_word_is_the_mean_of_its_tokens(tokenizer):
    from workflow_scripts.clip4dm.words import tokenize_caption, word_scores

    for rule in ("original", "cleaned"):
        item = tokenize_caption(tokenizer, "red-ish", TEMPLATE, 77, rule=rule)
        assert item.words == ["red-ish"]
        positions = np.flatnonzero(item.word_of_token == 0)
        assert len(positions) == 3                                 # red, -, ish
        scores = np.zeros(77)
        scores[positions] = [1.0, 2.0, 6.0]
        assert word_scores(scores[None], [item])[0][0] == pytest.approx(3.0)


@pytest.mark.parametrize("word", [".", ",", "!", '"', "?", ";", ":", " ", "", "\t", ".,", '!"', "?;:", ",!",
                                  "-", "&", "(", ")", "'", "/", "—", "*", "#", "?!", "...", "a", "3", "é", "t-shirt"])
def test_punctuation_filters(word):
    """original: dropped iff a substring of '.,!"?;:" ' or whitespace only (the original's two filters);
    alphanumeric: dropped iff no letter or digit."""
    from workflow_scripts.clip4dm.words import is_punctuation

    assert is_punctuation(word, "original") == ((word in ORIGINAL_PUNCTUATION) or not word.strip())
    assert is_punctuation(word, "alphanumeric") == (not any(c.isalnum() for c in word))


def test_bad_captions_and_rules_are_named(tokenizer):
    from workflow_scripts.clip4dm.words import tokenize_caption

    with pytest.raises(InputError, match="captions.txt:7: empty caption"):
        tokenize_caption(tokenizer, "   ", TEMPLATE, 24, where="captions.txt:7")
    with pytest.raises(InputError, match=r"captions.txt:9: .*longer than the model's context of 12"):
        tokenize_caption(tokenizer, "a red circle in the top left on a striped background", TEMPLATE, 12,
                         where="captions.txt:9")
    with pytest.raises(InputError, match="unknown clip4dm.words rule 'spaces'"):
        tokenize_caption(tokenizer, "a dog", TEMPLATE, 24, rule="spaces")


def test_token_table_lists_every_long_caption_or_cuts_and_logs_each(tokenizer, caplog):
    """long_captions error: one error listing every long caption and the setting that cuts them;
    truncate: each cut caption logged and recorded, the others untouched."""
    from workflow_scripts.clip4dm.token_table import TokenTable

    captions = ["a red circle", "a red circle in the top left on a striped background",
                "two blue squares at the bottom right on a plain grey background", "a star"]
    where = [f"captions.txt:{i + 1}" for i in range(len(captions))]
    with pytest.raises(InputError) as err:
        TokenTable(TEMPLATE, 12, "fp-tiny-vit", truncate=False, tokenizer=tokenizer).items(captions, where)
    message = str(err.value)
    assert message.startswith("2 caption(s) longer than the model's context of 12 tokens")
    assert "captions.txt:2: " in message and "captions.txt:3: " in message and "captions.txt:1:" not in message
    assert "clip4dm.long_captions: truncate" in message
    table = TokenTable(TEMPLATE, 12, "fp-tiny-vit", truncate=True, tokenizer=tokenizer)
    with caplog.at_level("WARNING"):
        items = table.items(captions, where)
    assert [t.truncated for t in items] == [False, True, True, False]
    assert table.truncated() == captions[1:3]
    logged = [r.getMessage() for r in caplog.records if "truncated to the context" in r.getMessage()]
    assert len(logged) == 2 and "captions.txt:2: " in logged[0] and "captions.txt:3: " in logged[1]


def test_token_table_keeps_its_word_rule_through_arrays(tokenizer):
    """The pack's table remembers the rule it was tokenized with; a table saved before the rule existed
    reads as `cleaned` (how it was made)."""
    from workflow_scripts.clip4dm.token_table import TokenTable

    for rule in ("original", "cleaned"):
        table = TokenTable(TEMPLATE, 24, "fp-tiny-vit", tokenizer=tokenizer, words=rule)
        table.items(["a dog\tand cat"])
        again = TokenTable.from_arrays(table.to_arrays(), "test")
        assert again.words == rule and again.rows["a dog\tand cat"].words == table.rows["a dog\tand cat"].words
    arrays = table.to_arrays()
    import json
    meta = json.loads(str(arrays["table.meta"]))
    del meta["words"]
    arrays["table.meta"] = np.asarray(json.dumps(meta))
    assert TokenTable.from_arrays(arrays, "old pack").words == "cleaned"
