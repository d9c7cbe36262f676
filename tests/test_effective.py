"""Effective misalignment: text changes and contradictions with the images' true attributes, against
hand-checked captions and against the generated world (human captions never contradict their image)."""

from __future__ import annotations

import pandas as pd
import pytest

from workflow_scripts.misalign import effective
from workflow_scripts.common.errors import InputError


def truth(rows):
    cols = ["shape", "colour", "size", "count", "position", "background"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


TRUTH = truth([("circle", "red", "small", "1", "top left", "striped"),
               ("square", "blue", "large", "2", "top right", "plain"),
               ("circle", "green", "small", "1", "bottom left", "dotted")])


def test_contradictions_by_hand():
    captions = ["a small red circle in the top left",      # all true
                "two red squares",                          # colour wrong
                "a square on a dotted background"]          # shape wrong, background right
    wrong = effective.contradictions(captions, TRUTH)
    assert not wrong.iloc[0].any()
    assert wrong.iloc[1].to_dict() == {**{a: False for a in effective.ATTRIBUTES}, "colour": True}
    assert wrong.iloc[2]["shape"] and not wrong.iloc[2]["background"]


def test_identical_caption_swaps_are_not_misalignment():
    original = ["a circle", "a blue square", "a circle"]
    swapped = ["a circle", "a blue square", "a circle"]               # lines 0 and 2 exchanged
    row = effective.effective_misalignment(original, swapped, TRUTH)
    assert row["text_changed"] == 0.0 and row["contradicts_any"] == 0.0
    row = effective.effective_misalignment(original, ["a blue square", "a circle", "a circle"], TRUTH)
    assert row["text_changed"] == pytest.approx(2 / 3)
    assert row["contradicts_shape"] == pytest.approx(2 / 3)           # lines 0 and 1 name the wrong shape
    assert row["contradicts_colour"] == pytest.approx(1 / 3)          # line 0 says blue, the image is red
    assert row["contradicts_any"] == pytest.approx(2 / 3)
    assert "contradicts_any" not in effective.effective_misalignment(original, original)   # text only


def test_world_captions_never_contradict_their_images(tiny_world):
    from workflow_scripts.misalign.captions import read_captions

    captions = read_captions(tiny_world / "captions.txt")
    table = effective.read_truth(tiny_world / "train_attributes.csv")
    assert effective.effective_misalignment(captions, captions, table)["contradicts_any"] == 0.0
    shifted = captions[1:] + captions[:1]
    assert effective.effective_misalignment(captions, shifted, table)["contradicts_any"] > 0.3


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(InputError, match="2 lines, the original 3"):
        effective.effective_misalignment(["a", "b", "c"], ["a", "b"])
    bad = tmp_path / "attrs.csv"
    bad.write_text("image,shape\nx.png,circle\n")
    with pytest.raises(InputError, match="attrs.csv: missing attribute columns"):
        effective.read_truth(str(bad))
