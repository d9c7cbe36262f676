"""F-CLIPScore in its three modes, flagged words, spans, RefCLIPScore and the misalignment-rate estimate,
against plain references (the original's rules re-implemented in clip4dm_reference.py, or plain loops)."""

from __future__ import annotations

import numpy as np
import pytest
from clip4dm_reference import hat_span, reference_term, threshold_result


def plain_scores(words, scores, cos, eps):
    """Per pair with loops, the original's rules: threshold sum over the words kept by its punctuation filter
    (not a substring of '.,!"?;:" ', not whitespace only), the first most negative word (any word), the
    HAT span, and the three F-CLIPScores."""
    out = []
    for ws, ss, c in zip(words, scores, cos):
        pairs = [(w, float(s)) for w, s in zip(ws, ss)]
        neg, _, _ = threshold_result([(w, s) for w, s in pairs if not np.isnan(s)], eps)
        best, best_i = None, -1
        for i, s in enumerate(ss):
            if not np.isnan(s) and (best is None or s < best):
                best, best_i = s, i
        span_text, span_score = hat_span(pairs, eps)
        factor = 1 - max(c, 0.0)
        out.append({"negative_sum": neg, "clipscore": 2.5 * max(c, 0.0), "worst_index": best_i,
                    "span_score": span_score, "span": span_text,
                    "threshold": neg * factor, "most_negative": (best if best is not None else 0.0) * factor,
                    "span_mean": span_score * factor})
    return out


@pytest.mark.parametrize("mode", ["threshold", "most_negative", "span_mean"])
def test_score_table_equals_plain_loops_of_the_original(mode):
    from workflow_scripts.clip4dm.scores import score_table

    rng = np.random.default_rng(0)
    vocab = ["a", "red", ",", "circle", ".", "top", "...", "-", "?!", "&", '!"', "t-shirt"]
    words = [[vocab[j] for j in rng.integers(0, len(vocab), k)] for k in rng.integers(1, 9, 400)]
    scores = [rng.normal(0, 1, len(w)) for w in words]
    cos = rng.uniform(-0.5, 1, 400)
    table = score_table(words, scores, cos, -0.3, mode)
    for i, ref in enumerate(plain_scores(words, scores, cos, -0.3)):
        assert table["negative_sum"][i] == pytest.approx(ref["negative_sum"])
        assert table["span_score"][i] == pytest.approx(ref["span_score"])
        assert table["span"][i] == ref["span"]
        assert table["fclipscore"][i] == pytest.approx(ref[mode])
        assert table["clipscore"][i] == pytest.approx(ref["clipscore"])
        assert table["worst_index"][i] == ref["worst_index"]
        assert table["worst_word"][i] == words[i][ref["worst_index"]]


def test_score_table_with_nan_words_and_the_alphanumeric_filter():
    """Words without a score (NaN, cleaned rule) are never flagged nor most negative; the alphanumeric
    filter drops any word without a letter or digit."""
    from workflow_scripts.clip4dm.scores import score_table

    rng = np.random.default_rng(5)
    vocab = ["a", "red", ",", "circle", "-", "?!", "&", "t-shirt"]
    words = [[vocab[j] for j in rng.integers(0, len(vocab), k)] for k in rng.integers(1, 9, 300)]
    scores = [rng.normal(0, 1, len(w)) for w in words]
    for s in scores[:60]:
        s[rng.integers(len(s))] = np.nan
    cos = rng.uniform(-0.5, 1, 300)
    table = score_table(words, scores, cos, -0.3, "threshold", "alphanumeric")
    for i, (ws, ss) in enumerate(zip(words, scores)):
        neg = sum(s for w, s in zip(ws, ss) if any(ch.isalnum() for ch in w) and not np.isnan(s) and s < -0.3)
        assert table["negative_sum"][i] == pytest.approx(neg)
        finite = [(s, j) for j, s in enumerate(ss) if not np.isnan(s)]
        assert table["worst_index"][i] == (min(finite)[1] if finite else -1)


def test_spans_merge_consecutive_flagged_words_across_a_dropped_comma():
    """The original counts span indices after its punctuation filter: 'red , frisbee' is one run when ','
    is dropped; the most negative run (by mean) is the prediction."""
    from workflow_scripts.clip4dm.scores import spans

    words = ["a", "dog", "with", "a", "red", ",", "frisbee", "on", "grass"]
    scores = np.array([0.1, -0.5, 0.2, -0.1, -0.4, -0.9, -0.8, 0.3, -0.2])
    got = spans(words, scores, -0.15)
    # flagged: dog, red, frisbee, grass; ',' is dropped and does not break red-frisbee
    assert [(s.start, s.end, s.text) for s in got] == [(4, 7, "red frisbee"), (1, 2, "dog"), (8, 9, "grass")]
    assert got[0].score == pytest.approx(-0.6)
    assert hat_span(list(zip(words, scores)), -0.15) == ("red frisbee", pytest.approx(-0.6))


def test_refclipscore_every_reference_and_the_original_first_reference():
    """all: harmonic mean of CLIPScore and 2.5 * max(max_r cos, 0) over every reference (plain numpy); first:
    the original's get_reference_term (returns inside its loop) - differs when a later reference is closer."""
    from workflow_scripts.clip4dm.scores import clip_score, ref_clip_score

    rng = np.random.default_rng(4)
    text = rng.normal(size=(6, 8))
    refs = [rng.normal(size=(k, 8)) for k in (3, 1, 4, 2, 0, 5)]
    refs[0][2] = text[0] * 3 + 0.01          # a later reference nearly equal to the caption
    cos = np.array([0.3, -0.1, 0.25, 0.4, 0.2, 0.05])      # a negative cosine: CLIPScore 0, RefCLIPScore 0
    a = clip_score(cos)
    got = ref_clip_score(a, text, refs, "all")
    first = ref_clip_score(a, text, refs, "first")
    for i in range(6):
        if not len(refs[i]):
            assert np.isnan(got[i]) and np.isnan(first[i])
            continue
        sims = [float(text[i] @ r / np.linalg.norm(text[i]) / np.linalg.norm(r)) for r in refs[i]]
        b = 2.5 * max(max(sims), 0.0)
        assert got[i] == pytest.approx(2 * a[i] * b / (a[i] + b) if a[i] + b else 0.0)
        b1 = reference_term(text[i], list(refs[i]))
        assert first[i] == pytest.approx(2 * a[i] * b1 / (a[i] + b1) if a[i] + b1 else 0.0)
    assert got[0] > first[0]
    hessel = ref_clip_score(a, text, refs, "all", weight=1.0)
    b = max(max(float(text[1] @ r / np.linalg.norm(text[1]) / np.linalg.norm(r)) for r in refs[1]), 0.0)
    assert hessel[1] == pytest.approx(2 * a[1] * b / (a[1] + b) if a[1] + b else 0.0)


def test_epsilon_quantile_drops_punctuation():
    from workflow_scripts.clip4dm.scores import calibrate_epsilon

    words = [["a", ".", "b"], ["c", ","]]
    scores = [np.array([1.0, -100.0, 3.0]), np.array([2.0, -50.0])]
    assert calibrate_epsilon(words, scores, 0.5) == pytest.approx(2.0)


def test_storey_estimate_recovers_a_known_fraction():
    """Aligned scores ~ N(0, 1) (the null sample is a separate draw), misaligned ~ N(-4, 1): the estimate
    is within 0.03 of the true fraction for 5000 pairs (its sd here is about 0.01)."""
    from workflow_scripts.clip4dm.metrics import estimate_misaligned_fraction

    rng = np.random.default_rng(1)
    null = rng.normal(size=4000)
    for rate in (0.0, 0.2, 0.5):
        n_bad = int(5000 * rate)
        scores = np.concatenate([rng.normal(size=5000 - n_bad), rng.normal(-4, 1, n_bad)])
        assert abs(estimate_misaligned_fraction(scores, null, 0.5, seed=0) - rate) < 0.03


def test_randomised_pvalues_are_uniform_under_ties():
    """Scores tied at 0 (F-CLIPScore of captions without flagged words): randomised p-values of a fresh
    aligned sample are still uniform (mean 0.5, P(p > 0.5) = 0.5 within 4 sd)."""
    from workflow_scripts.clip4dm.metrics import null_pvalues

    rng = np.random.default_rng(2)

    def draw(n):
        return np.where(rng.random(n) < 0.6, 0.0, -rng.exponential(size=n))

    p = null_pvalues(draw(20000), draw(20000), np.random.default_rng(0))
    sd = np.sqrt(0.25 / len(p))
    assert abs(np.mean(p > 0.5) - 0.5) < 4 * sd
    assert abs(p.mean() - 0.5) < 4 * np.sqrt(1 / 12 / len(p))


def test_ap_auroc_single_class_is_nan_and_matches_a_plain_auc():
    from workflow_scripts.clip4dm.metrics import ap_auroc

    assert all(np.isnan(ap_auroc(np.ones(5), np.arange(5.0))))
    rng = np.random.default_rng(3)
    y = rng.random(200) < 0.3
    s = rng.normal(size=200) + y
    pos, neg = s[y], s[~y]
    plain = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert ap_auroc(y, s)[1] == pytest.approx(plain)


def test_localisation_accuracy_and_span_rule():
    from workflow_scripts.clip4dm.metrics import localisation_accuracy, span_correct

    assert localisation_accuracy(["Red", "dog"], ["red", "cat"]) == 0.5
    # the original's prediction: negative_word.strip().lower().split()[0].split("_")[-1]
    predicted = ["Dog\tand", "t_Shirt", " cat ", "a_b_c"]
    truth = ["dog", "shirt", "cat", "c"]
    plain = [p.strip().lower().split()[0].split("_")[-1] == t for p, t in zip(predicted, truth)]
    assert all(plain) and localisation_accuracy(predicted, truth) == 1.0
    assert span_correct("red frisbee", "a red frisbee") and not span_correct("", "x")
    assert not span_correct("dog", "red frisbee")


def test_no_null_sample_gives_no_estimate():
    from workflow_scripts.clip4dm.metrics import estimate_misaligned_fraction, flagged_fraction

    assert np.isnan(estimate_misaligned_fraction(np.zeros(10), np.zeros(0)))
    assert np.isnan(flagged_fraction(np.zeros(10), np.zeros(0), 0.05))


def test_summary_lists_truncated_captions_and_says_why_rates_are_missing():
    import pandas as pd

    from workflow_scripts.report.aggregate import with_note
    from workflow_scripts.clip4dm.summarise import NO_NULL, truncated_table, with_rate_note

    calib = [{"model": "clip", "truncated_captions": ["a long caption", "another long one"]},
             {"model": "laclip", "truncated_captions": []}]
    real = [{"model": "clip", "set": "hat", "truncated_captions": ["a long hat caption"]}]
    table = truncated_table(calib, real)
    assert list(table["model"]) == ["clip", "clip", "clip"]
    assert list(table["caption"]) == ["a long caption", "another long one", "a long hat caption"]
    assert table["scored_in"].iloc[2] == "real benchmark hat"
    empty = with_note(truncated_table([{"model": "clip"}], []), "none truncated")
    assert list(empty.columns) == ["note"] and empty["note"].iloc[0] == "none truncated"
    rate = pd.DataFrame({"model": ["clip"] * 2, "estimated_rate_fclipscore": [float("nan")] * 2,
                         "estimated_rate_clipscore": [float("nan")] * 2, "nominal": [0.1, 0.5]})
    assert (with_rate_note(rate)["note"] == NO_NULL).all()
    rate.loc[1, "estimated_rate_clipscore"] = 0.4
    assert "note" not in with_rate_note(rate)


@pytest.mark.parametrize("mode", ["threshold", "most_negative"])
def test_detection_null_is_scored_with_the_detection_mode(mode):
    """The rate estimate's null (held-out aligned pairs) is recomputed from the pack's held-out attributions
    with the detection's F-CLIPScore mode, equal to the plain rules of the original."""
    from workflow_scripts.clip4dm.detect import heldout_null
    from workflow_scripts.clip4dm.pipeline import Pack, ragged_arrays
    from workflow_scripts.clip4dm.token_table import TokenTable
    from workflow_scripts.models.clip import get_tokenizer

    captions = ["a red circle, top left.", "two blue stars", "a small - green box !", "three... rhombi"]
    table = TokenTable("A photo depicts ", 24, "fp-tiny-vit", tokenizer=get_tokenizer("fp-tiny-vit"))
    words = [t.words for t in table.items(captions)]
    rng = np.random.default_rng(7)
    attr = [rng.normal(0, 1, len(w)) for w in words]
    cos = np.array([0.3, -0.2, 0.5, 0.1])
    pack = Pack({**table.to_arrays(), **ragged_arrays("heldout.attr", attr), "heldout.cos": cos,
                 "heldout.captions": np.asarray(captions)}, "pack.npz")
    null = heldout_null(pack, -0.2, mode, "original")
    plain = plain_scores(words, attr, cos, -0.2)
    np.testing.assert_allclose(null["fclipscore"], [p[mode] for p in plain], rtol=1e-12)
    np.testing.assert_allclose(null["clipscore"], [p["clipscore"] for p in plain], rtol=1e-12)
