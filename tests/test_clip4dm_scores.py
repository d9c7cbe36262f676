"""F-CLIPScore, flagged words, spans and the misalignment-rate estimate, against plain references."""

from __future__ import annotations

import numpy as np
import pytest


def plain_scores(words, scores, cos, eps):
    """Per pair with loops: the original's threshold sum, F-CLIPScore and most-negative word."""
    out = []
    for ws, ss, c in zip(words, scores, cos):
        neg = 0.0
        for w, s in zip(ws, ss):
            if any(ch.isalnum() for ch in w) and not np.isnan(s) and s < eps:
                neg += s
        best, best_i = None, -1
        for i, s in enumerate(ss):
            if not np.isnan(s) and (best is None or s < best):
                best, best_i = s, i
        out.append((neg, neg * (1 - max(c, 0.0)), 2.5 * max(c, 0.0), best_i))
    return out


def test_score_table_equals_plain_loops():
    from workflow_scripts.clip4dm.scores import score_table

    rng = np.random.default_rng(0)
    vocab = ["a", "red", ",", "circle", ".", "top", "..."]
    words = [[vocab[j] for j in rng.integers(0, len(vocab), k)] for k in rng.integers(0, 9, 400)]
    scores = [rng.normal(0, 1, len(w)) for w in words]
    for s in scores[:60]:
        if len(s):
            s[rng.integers(len(s))] = np.nan
    cos = rng.uniform(-0.5, 1, 400)
    table = score_table(words, scores, cos, -0.3)
    for i, (neg, f, cs, worst) in enumerate(plain_scores(words, scores, cos, -0.3)):
        assert table["negative_sum"][i] == pytest.approx(neg)
        assert table["fclipscore"][i] == pytest.approx(f)
        assert table["clipscore"][i] == pytest.approx(cs)
        assert table["worst_index"][i] == worst
        assert table["worst_word"][i] == (words[i][worst] if worst >= 0 else "")


def test_spans_merge_consecutive_flagged_words():
    from workflow_scripts.clip4dm.scores import spans

    words = ["a", "dog", "with", "a", "red", "frisbee", ",", "grass"]
    scores = np.array([0.1, -0.5, 0.2, -0.1, -0.4, -0.8, -0.9, -0.2])
    got = spans(words, scores, -0.15)
    # flagged: dog(1), red(4), frisbee(5), grass(7); ',' is punctuation and never flagged
    assert [(s.start, s.end, s.text) for s in got] == [(4, 6, "red frisbee"), (1, 2, "dog"), (7, 8, "grass")]
    assert got[0].score == pytest.approx(-0.6)


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
    assert span_correct("red frisbee", "a red frisbee") and not span_correct("", "x")
    assert not span_correct("dog", "red frisbee")


def test_no_null_sample_gives_no_estimate():
    from workflow_scripts.clip4dm.metrics import estimate_misaligned_fraction, flagged_fraction

    assert np.isnan(estimate_misaligned_fraction(np.zeros(10), np.zeros(0)))
    assert np.isnan(flagged_fraction(np.zeros(10), np.zeros(0), 0.05))
