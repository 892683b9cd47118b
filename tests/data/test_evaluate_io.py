"""Shared metrics and atomic persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import classification_report

from core.io import append_jsonl, atomic_write, atomic_write_json, read_json, read_jsonl
from core.metrics import ClassificationResult, StageTimer, classification_result


def test_hand_checked_metrics() -> None:
    # a: 2 right, 1 called b; b: 1 right; c: 1 called a.
    res = classification_result(
        ["a", "a", "a", "b", "c"], ["a", "a", "b", "b", "a"], ["a", "b", "c"]
    )
    assert res.accuracy == pytest.approx(3 / 5)
    assert res.per_class["a"].precision == pytest.approx(2 / 3)
    assert res.per_class["a"].recall == pytest.approx(2 / 3)
    assert res.per_class["b"].precision == pytest.approx(1 / 2)
    assert res.per_class["b"].recall == 1.0
    assert res.per_class["c"].f1 == 0.0 and res.per_class["c"].support == 1
    assert res.confusion_matrix == [[2, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert res.macro_recall == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_matches_sklearn_report_on_random_labels() -> None:
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    names = ["w", "x", "y", "z"]
    res = classification_result(y, p, names)
    ref = classification_report(y, p, target_names=names, output_dict=True, zero_division=0)
    for n in names:
        assert res.per_class[n].f1 == pytest.approx(ref[n]["f1-score"])
    assert res.macro_f1 == pytest.approx(ref["macro avg"]["f1-score"])
    assert res.weighted_f1 == pytest.approx(ref["weighted avg"]["f1-score"])


def test_result_json_round_trip_with_timings() -> None:
    timer = StageTimer()
    with timer("fit"):
        pass
    res = classification_result([0, 1], [0, 1], ["a", "b"], timings=timer.seconds)
    back = ClassificationResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back == res and "fit" in back.timings
    assert "macro avg" in res.report()


def test_bad_labels_are_clear() -> None:
    with pytest.raises(ValueError, match="unknown class label 'q'"):
        classification_result(["a"], ["q"], ["a", "b"])
    with pytest.raises(ValueError, match="zero predictions"):
        classification_result([], [], ["a"])


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"v": 1})

    def boom(fh) -> None:
        fh.write(b'{"v": 2')
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left


def test_jsonl_ignores_torn_last_line(tmp_path: Path) -> None:
    f = tmp_path / "m.jsonl"
    append_jsonl(f, {"epoch": 1, "acc": np.float32(0.5)})
    append_jsonl(f, {"epoch": 2})
    with open(f, "a") as fh:
        fh.write('{"epoch": 3, "ac')
    assert read_jsonl(f) == [{"epoch": 1, "acc": 0.5}, {"epoch": 2}]


def test_a_cache_pickled_before_a_module_rename_still_loads() -> None:
    """Keyword models saved in an index name core.text.mapping.Mapping (now
    core.text.categories): they load, not fall back to a refit at the next indexing."""
    import pickle

    from core.io import MOVED_MODULES, loads_trusted
    from core.text.categories import Mapping

    m = Mapping({"sea": ["wave", "beach"]}, description="t")
    old = pickle.dumps(m, protocol=0).replace(b"core.text.categories", b"core.text.mapping")
    assert (
        b"core.text.mapping" in old and MOVED_MODULES["core.text.mapping"] == "core.text.categories"
    )
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(old)
    got = loads_trusted(old)
    assert isinstance(got, Mapping) and got.categories == {"sea": ["wave", "beach"]}
