"""Figures: every figure renders from small synthetic tables to valid PNG and SVG, byte-identical on rerun."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.report import aggregate, figures
from workflow_scripts.common.errors import InputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    rng = np.random.default_rng(0)
    rows, prow, hist = [], [], []
    runs = [("none", 0.0)] + [(s, cs) for s in ("similarity", "random") for cs in (0.3, 0.8)]
    for strategy, cs in runs:
        for seed in range(3):
            tags = {"model": "clip", "strategy": strategy, "cs": cs, "seed": seed}
            prow.append({**tags, "projection": "text", "metric": "avg_abs_cos_sim",
                         "value": 0.05 + 0.1 * cs + 0.005 * rng.normal()})
            rows += [{**tags, "set": s, "metric": "acc1", "value": 0.7 - 0.2 * cs + 0.02 * rng.normal()}
                     for s in ("shape", "colour")]
            edges = np.linspace(-1, 1, 51)
            counts, _ = np.histogram(rng.normal(0, 0.1 + 0.2 * cs, 500), bins=edges)
            hist.append(pd.DataFrame({**tags, "projection": "text", "bin_left": edges[:-1],
                                      "bin_right": edges[1:], "count": counts}))
    sweep = []
    for s in ("shape", "colour"):
        for strategy, draws in (("high_purity", 1), ("low_purity", 1), ("random", 5)):
            for size in (8, 12, 16):
                sweep += [{"model": "clip", "set": s, "strategy": strategy, "size": size, "fraction": size / 32,
                           "draw": d, "metric": "acc1", "value": 0.3 + size / 40 + 0.02 * rng.normal()}
                          for d in range(draws)]
        sweep.append({"model": "clip", "set": s, "strategy": "full", "size": 32, "fraction": 1.0, "draw": 0,
                      "metric": "acc1", "value": 0.8})
    exp1 = pd.DataFrame({"set": ["shape", "shape", "colour", "colour"], "model": ["clip", "laclip"] * 2,
                         "acc1": [0.6, 0.7, 0.5, 0.55], "silhouette": [0.1, 0.12, -0.02, 0.01]})
    d = tmp_path_factory.mktemp("tables")
    purity = aggregate.paired_summary(pd.DataFrame(prow), "projection").assign(
        pretrained=0.06, random_mean=0.1, random_sd=0.002)
    accuracy = aggregate.paired_summary(pd.DataFrame(rows), "set").assign(pretrained=0.65)
    effective = pd.concat([purity.assign(quantity="purity text").drop(columns="projection"),
                           accuracy.assign(quantity=lambda d: "acc1 " + d["set"]).drop(columns="set")])
    effective["contradicts_any"] = effective["cs"] * np.where(effective["strategy"] == "similarity", 0.3, 0.9)
    paths = {
        "purity-vs-cs": purity,
        "accuracy-vs-cs": accuracy,
        "effective": effective,
        "cosine-hist": aggregate.mean_histograms(pd.concat(hist, ignore_index=True)),
        "pruning": pd.DataFrame(sweep),
        "exp1": exp1,
    }
    out = {}
    for name, df in paths.items():
        df.to_parquet(d / f"{name}.parquet")
        out[name] = d / f"{name}.parquet"
    return out


def check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000


def check_svg(path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    assert len(list(root.iter())) > 50                       # drawn content, not an empty canvas
    assert b"<dc:date>" not in path.read_bytes()             # no timestamp: reruns are byte-identical


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_cli_draws_valid_deterministic_files(name, tables, tmp_path):
    png, svg = tmp_path / f"{name}.png", tmp_path / f"{name}.svg"
    assert figures.main([name, "--table", str(tables[name]), "--out", str(png), str(svg)]) == 0
    check_png(png)
    check_svg(svg)
    first = png.read_bytes(), svg.read_bytes()
    assert figures.main([name, "--table", str(tables[name]), "--out", str(png), str(svg)]) == 0
    assert (png.read_bytes(), svg.read_bytes()) == first


def test_pruning_figure_draws_every_strategy(tables):
    fig = figures.pruning_curves(pd.read_parquet(tables["pruning"]))
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["High purity (lowest scores)", "Low purity (highest scores)", "Random (mean ± sd)", "Full"]
    assert len(ax.collections) == 1                          # the random ± sd band
    assert {a.get_title() for a in fig.axes} == {"shape", "colour"}


def test_purity_figure_has_a_line_and_band_per_strategy_and_the_reference_levels(tables):
    fig = figures.purity_vs_cs(pd.read_parquet(tables["purity-vs-cs"]))
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["random", "similarity", "pretrained", "random matrix (± sd)"]
    x, y = ax.get_lines()[1].get_data()                      # 'similarity', means over seeds, control first
    assert list(x) == [0.0, 0.3, 0.8] and y[2] > y[0]
    assert ax.get_lines()[0].get_data()[1][0] == y[0]        # both strategies share the one control point
    assert ax.get_lines()[2].get_ydata()[0] == 0.06 and ax.get_lines()[3].get_ydata()[0] == 0.1


def test_effective_figure_puts_both_strategies_on_the_effective_axis(tables):
    fig = figures.versus_effective(pd.read_parquet(tables["effective"]))
    ax = next(a for a in fig.axes if a.get_title() == "purity text")
    assert ax.get_xlabel() == "lines contradicting the image"
    lines = {line.get_label(): line.get_data() for line in ax.get_lines()}
    assert list(lines["similarity"][0]) == pytest.approx([0.0, 0.09, 0.24])
    assert list(lines["random"][0]) == pytest.approx([0.0, 0.27, 0.72])


def test_missing_rows_and_columns_are_reported(tables, tmp_path):
    with pytest.raises(InputError, match="no rows"):
        figures.main(["accuracy-vs-cs", "--table", str(tables["accuracy-vs-cs"]), "--metric", "acc5",
                      "--out", str(tmp_path / "x.png")])
    with pytest.raises(InputError, match="lacks columns"):
        figures.main(["exp1", "--table", str(tables["pruning"]), "--out", str(tmp_path / "x.png")])
    with pytest.raises(InputError, match=".png or .svg"):
        figures.main(["exp1", "--table", str(tables["exp1"]), "--out", str(tmp_path / "x.pdf")])
