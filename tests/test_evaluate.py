"""Embedding measures (mm_core.evaluate), holdout rules and the retrieval gate, on data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from mm_core import evaluate as ev
from mm_core.config import EvaluationConfig
from mm_core.training.evaluation import gate
from mm_core.training.split import first_label, holdout_flags, stable_fraction


def _unit(rng, n, d=16):
    return ev.normalize(rng.normal(size=(n, d)))


def test_recall_is_one_for_identical_views_and_counts_ties_against_the_query():
    rng = np.random.default_rng(0)
    x = _unit(rng, 20)
    hits = np.eye(20, dtype=bool)
    assert ev.retrieval_recall(x, x, hits, ks=(1, 5)) == {1: 1.0, 5: 1.0}
    # every gallery item equally similar: a hit ranks after all equal misses
    flat = np.ones((20, 4), np.float32)
    r = ev.retrieval_recall(flat, flat, hits, ks=(1, 19, 20))
    assert r == {1: 0.0, 19: 0.0, 20: 1.0}


def test_recall_by_hand_and_group_aware_hits():
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    gallery = np.array([[0.0, 1.0], [1.0, 0.0], [0.7, 0.7]])
    # query 0 wants gallery 0 (rank 3), query 1 wants gallery 1 (rank 3), query 2 wants gallery 1 (rank 1)
    hits = ev.hit_matrix(["a", "b", "b"], ["a", "b", "c"])
    assert hits.tolist() == [[True, False, False], [False, True, False], [False, True, False]]
    r = ev.retrieval_recall(queries, gallery, hits, ks=(1, 2, 3))
    assert r[1] == pytest.approx(1 / 3) and r[2] == pytest.approx(1 / 3) and r[3] == 1.0
    # the query's own item is a hit even when its group differs
    own = ev.hit_matrix(["a"], ["x", "y"], query_items=["k"], gallery_items=["z", "k"])
    assert own.tolist() == [[False, True]]


def test_chance_recall_matches_the_formula_and_a_simulation():
    hits = np.zeros((1, 10), bool)
    hits[0, 3] = True
    assert ev.chance_recall(hits, ks=(1, 5, 10)) == pytest.approx({1: 0.1, 5: 0.5, 10: 1.0})
    groups = ["a"] * 3 + ["b"] * 7
    h = ev.hit_matrix(groups, groups)
    rng = np.random.default_rng(1)
    sim = np.mean([ev.retrieval_recall(_unit(rng, 10), _unit(rng, 10), h, ks=(2,))[2] for _ in range(400)])
    assert sim == pytest.approx(ev.chance_recall(h, ks=(2,))[2], abs=0.04)


def test_unique_items_keeps_first_occurrences():
    assert ev.unique_items(["b", "a", "b", "c", "a"]).tolist() == [0, 1, 3]


def test_linear_probe_separates_clusters_and_not_shuffled_labels():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 4
    y = rng.integers(0, 3, 300)
    x = centers[y] + rng.normal(size=(300, 8))
    labels = [f"c{v}" for v in y]
    good = ev.linear_probe(x[:200], labels[:200], x[200:], labels[200:])
    assert good["accuracy"] > 0.95 and good["classes"] == 3
    shuffled = list(rng.permutation(labels[:200]))
    bad = ev.linear_probe(x[:200], shuffled, x[200:], labels[200:])
    assert bad["accuracy"] < 0.6
    assert np.isnan(ev.linear_probe(x[:5], ["a"] * 5, x[5:9], ["a"] * 4)["accuracy"])  # one class: no probe


def test_alignment_uniformity_and_robustness():
    rng = np.random.default_rng(0)
    x = _unit(rng, 200)
    assert ev.alignment(x, x) == pytest.approx(0.0, abs=1e-6)
    assert ev.alignment(x, -x) == pytest.approx(4.0, abs=1e-5)  # opposite points: ||2x||^2
    collapsed = np.tile(x[:1], (50, 1))
    assert ev.uniformity(collapsed) == pytest.approx(0.0, abs=1e-6)
    assert ev.uniformity(x) < -2.0  # spread on the sphere: much lower
    same = ev.robustness(x, x)
    assert same == pytest.approx({"cosine": 1.0, "recall@1": 1.0})
    noisy = ev.robustness(x + 0.3 * rng.normal(size=x.shape), x)
    assert 0.5 < noisy["cosine"] < 1.0


def test_holdout_rules_by_label_fraction_and_source():
    ids = [f"s/{i}" for i in range(400)]
    labels = [{"speaker": "george" if i % 4 == 0 else "lucas", "image": f"img{i // 5}"} for i in range(400)]
    sources = ["a" if i < 300 else "b" for i in range(400)]
    by_label = holdout_flags([{"label": "speaker", "values": ["george"]}], ids, sources, labels)
    assert sum(by_label) == 100 and all(f == (i % 4 == 0) for i, f in enumerate(by_label))
    by_image = holdout_flags([{"fraction": 0.2, "key": "image"}], ids, sources, labels)
    for start in range(0, 400, 5):  # every caption of an image on the same side
        assert len(set(by_image[start : start + 5])) == 1
    assert 0.1 < np.mean(by_image) < 0.3
    by_source = holdout_flags([{"source": "b"}], ids, sources, labels)
    assert sum(by_source) == 100
    no_key = holdout_flags([{"fraction": 0.5, "key": "subject"}], ids, sources, labels)
    assert not any(no_key)
    assert stable_fraction("x") == stable_fraction("x") != stable_fraction("y")
    assert first_label({"word": "five", "label": "X"}, ["label", "word"]) == "label=X"
    assert first_label({}, "word") is None


def _result(trained_r1, untrained_r1, chance):
    metric = "a->b/recall@1"
    return {
        "pairs": ["a->b"],
        "models": {"trained": {metric: trained_r1}, "untrained": {metric: untrained_r1}},
        "chance": {metric: chance},
    }


def test_gate_floors_chance_ratio_and_untrained_margin():
    cfg = EvaluationConfig(holdout={"source": "x"}, min_ratio_over_chance=2.0)
    assert gate(_result(0.5, 0.1, 0.1), cfg, trained=True)[0]
    assert not gate(_result(0.15, 0.1, 0.1), cfg, trained=True)[0]  # below 2x chance
    assert not gate(_result(0.5, 0.5, 0.1), cfg, trained=True)[0]  # not above untrained
    assert gate(_result(0.5, 0.5, 0.1), cfg, trained=False)[0]  # untrained build: chance rule only
    assert not gate(_result(None, 0.1, 0.1), cfg, trained=True)[0]  # not measured = fail
    floors = EvaluationConfig(holdout={"source": "x"}, floors={"a->b/recall@1": 0.8})
    ok, rows = gate(_result(0.79, 0.0, 0.1), floors, trained=True)
    assert not ok and rows == [
        {"metric": "a->b/recall@1", "value": 0.79, "bound": 0.8, "rule": "floor", "passed": False}
    ]
    assert gate(_result(0.81, 0.0, 0.1), floors, trained=True)[0]
