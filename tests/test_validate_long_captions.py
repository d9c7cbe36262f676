"""Long captions counted per model context by the data validation, against open_clip's own tokenizer call
(the token ids it pads to a long context, counted)."""

from __future__ import annotations

import logging

import pytest

from workflow_scripts.validation.long_captions import count_long_captions, model_contexts
from workflow_scripts.validation.problems import Problems

TEMPLATE = "A photo depicts "
CAPTIONS = ["a red circle", "a red circle in the top left on a striped background, next to two small stars and a faded yellow triangle near the lower edge",
            None, "Zwei blaue Quadrate, \"unten rechts\" — auf grauem Grund", "a star"]


def reference_lengths(arch: str, texts: list[str]) -> list[int]:
    import open_clip

    tokens = open_clip.get_tokenizer(arch)(texts, context_length=400).numpy()
    return list((tokens != 0).sum(axis=1))


@pytest.mark.parametrize("template", [None, TEMPLATE])
def test_counts_and_lists_every_long_line(template, caplog):
    contexts, skipped = model_contexts({"clip": {"arch": "fp-tiny-vit"}})
    assert not skipped and contexts[0].length == 24 and contexts[0].models == ("clip",)
    texts = [c for c in CAPTIONS if c is not None]
    lengths = dict(zip(texts, reference_lengths("fp-tiny-vit", [(template or "") + t for t in texts])))
    expected = [i for i, c in enumerate(CAPTIONS) if c is not None and lengths[c] > 24]
    assert expected, "the fixture must have long captions"
    problems = Problems()
    with caplog.at_level(logging.WARNING):
        summary = count_long_captions({"captions.txt": CAPTIONS}, contexts, template, problems)
    assert summary["fp-tiny-vit"]["models"] == ["clip"] and summary["fp-tiny-vit"]["context"] == 24
    counts = summary["fp-tiny-vit"]["files"]["captions.txt"]
    key = "longer_with_clip4dm_template" if template else "longer_than_context"
    assert counts[key] == len(expected) and counts["captions"] == len(CAPTIONS)
    listed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("captions.txt:")
              and "tokens" in r.getMessage() and "of 5 captions" not in r.getMessage()]
    assert [int(m.split(":")[1]) for m in listed] == [i + 1 for i in expected]
    if template:   # with the template, each long line is a problem (clip4dm.long_captions error)
        assert [p.line for p in problems.items] == [i + 1 for i in expected]
        assert "clip4dm.long_captions: truncate" in problems.items[0].message
    else:
        assert not problems


def test_a_context_that_fits_everything_lists_nothing():
    contexts, _ = model_contexts({"clip": {"arch": "fp-tiny-vit"}})
    big = [type(contexts[0])(("clip",), "fp-tiny-vit", contexts[0].tokenizer, 77)]
    problems = Problems()
    counts = count_long_captions({"c.txt": CAPTIONS}, big, TEMPLATE, problems)["fp-tiny-vit"]["files"]["c.txt"]
    assert counts == {"captions": 5, "longer_than_context": 0, "longer_with_clip4dm_template": 0} and not problems
