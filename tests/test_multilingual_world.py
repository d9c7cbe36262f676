"""Multilingual captions of the embedded world: independent per language, never shared verbatim, each a
function of the scene and its own random stream; held-out scenes regenerated exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.world import synthetic as world
from workflow_scripts.common.errors import InputError
from workflow_scripts.multilingual import lexicon
from workflow_scripts.multilingual import world as mw


def _scenes(n: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        s = world.sample_scene(rng)
        rows.append({"image": f"images/train/{i:06d}.png", "shape": s.shape, "colour": s.colour, "size": s.size,
                     "count": s.count, "position": s.position, "background": s.background, "_scene": s})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table():
    scenes = _scenes(3000)
    rng = np.random.default_rng([3, 1])
    english = [world.human_caption(s, rng, 20) for s in scenes["_scene"]]
    return mw.caption_table(scenes, english, ["en", "it", "de"], seed=0, split="train")


def test_no_caption_is_shared_verbatim_between_languages(table):
    sets = {lang: set(table[lang]) for lang in ("en", "it", "de")}
    for a in sets:
        for b in sets:
            if a < b:
                assert not sets[a] & sets[b], f"{a} and {b} share {sorted(sets[a] & sets[b])[:3]}"


def test_each_language_depends_only_on_the_scene_and_its_own_stream(table):
    scenes = _scenes(3000)
    # another language list and other English captions change nothing in Italian or German
    other = mw.caption_table(scenes, ["x"] * len(scenes), ["de", "it"], seed=0, split="train")
    assert other["it"].tolist() == table["it"].tolist()
    assert other["de"].tolist() == table["de"].tolist()
    # a caption is its own grammar applied to the scene, drawn from that language's stream alone
    for code in ("it", "de"):
        lang, rng = lexicon.LANGUAGES[code], np.random.default_rng([0, 300 + mw.LANGUAGE_STREAMS[code], 0])
        records = scenes[list(mw.SCENE_COLUMNS)].to_dict("records")
        assert [lang.caption(lang, r, rng) for r in records] == table[code].tolist()
    # changing a later scene leaves the earlier captions of every language as they were
    changed = scenes.copy()
    changed.loc[2999, "shape"] = "heart" if changed.loc[2999, "shape"] != "heart" else "star"
    again = mw.caption_table(changed, table["en"].tolist(), ["en", "it", "de"], seed=0, split="train")
    assert again.iloc[:2999].equals(table.iloc[:2999])
    # another split or seed is another stream
    assert mw.captions_for("it", scenes.head(50).to_dict("records"), 0, "heldout") != table["it"].tolist()[:50]


def test_captions_name_the_scene_in_their_own_words(table):
    """Spot checks of the grammars: an Italian caption names the scene's shape with an Italian noun, a
    German one with a German noun (unless it is web junk)."""
    scenes = _scenes(3000)
    for code in ("it", "de"):
        lang = lexicon.LANGUAGES[code]
        named = [any(form in text for noun in lang.shapes[shape] for form in noun[:2]) or text in lang.junk
                 for text, shape in zip(table[code], scenes["shape"])]
        assert np.mean(named) == 1.0


@pytest.mark.parametrize("base,gender,plural,want", [
    ("rosso", "m", False, "rosso"), ("rosso", "f", True, "rosse"), ("bianco", "m", True, "bianchi"),
    ("verde", "f", True, "verdi"), ("blu", "f", True, "blu"), ("grande", "m", False, "grande")])
def test_italian_agreement(base, gender, plural, want):
    assert lexicon.it_adjective(base, gender, plural) == want


@pytest.mark.parametrize("stem,gender,plural,want", [
    ("rot", "m", False, "roter"), ("rot", "f", False, "rote"), ("rot", "n", False, "rotes"),
    ("rot", "m", True, "rote"), ("orange", "m", False, "oranger"), ("lila", "n", False, "lila")])
def test_german_declension(stem, gender, plural, want):
    assert lexicon.de_adjective(stem, gender, plural) == want


def test_heldout_scenes_are_regenerated_and_checked(tmp_path):
    info = world.generate_world(tmp_path, seed=5, n_train=4, n_eval=1, image_size=16, n_rewrites=0,
                                max_caption_words=20, sets=[], n_heldout=6)
    held = mw.heldout_scenes(info, tmp_path / "heldout.csv")
    streams = world.training_examples(5, 6, 16, 0, 20, 0.0, world.HELDOUT_STREAMS)
    assert held["shape"].tolist() == [scene.shape for scene, *_ in streams]
    lines = (tmp_path / "heldout.csv").read_text().splitlines()
    lines[2] = lines[2].split(",")[0] + ",a caption the seed never wrote"
    (tmp_path / "heldout.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"heldout.csv:3"):
        mw.heldout_scenes(info, tmp_path / "heldout.csv")


def test_unknown_language_is_named():
    with pytest.raises(InputError, match="'fr'"):
        mw.captions_for("fr", [], 0, "train")
