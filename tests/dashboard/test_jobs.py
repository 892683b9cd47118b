"""dashboard.jobs: the rate and time left of a count, background jobs that outlive a script
run (joined when started twice, failures kept as one line) and what Home shows of them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.jobs import Job, Rate, Registry, format_seconds, index_job_key, registry
from tests.helpers import PAGES


def clock(*ticks: float):
    it = iter(ticks)
    return lambda: next(it)


def test_rate_waits_for_a_few_items_then_estimates_the_time_left() -> None:
    rate = Rate(clock(0.0, 0.5, 4.0, 5.0, 5.0))
    rate.update("Encoding", 0, 100)
    rate.update("Encoding", 2, 100)  # two items, half a second: too little to trust
    assert rate.per_second() is None and rate.text() == ""
    rate.update("Encoding", 20, 100)  # 20 items in 4 s
    assert rate.per_second() == pytest.approx(5.0) and rate.eta() == pytest.approx(16.0)
    assert rate.text() == " · 5.0/s · about 16 s left"
    rate.update("Writing", 0, 10)  # a new stage measures afresh
    assert rate.per_second() is None
    rate.update("Writing", 0, 10)
    assert rate.eta() is None


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (4.4, 59.6, 200, 3725)] == [
        "4 s",
        "1 min 00 s",
        "3 min 20 s",
        "1 h 02 min",
    ]


def _eta_script() -> None:
    from dashboard.common import Progress

    ticks = iter([0.0, 2.0, 4.0])
    bar = Progress("Indexing", clock=lambda: next(ticks))
    for done in (0, 10, 20):
        bar(done, 100)


def test_progress_bar_shows_rate_and_time_left() -> None:
    at = AppTest.from_function(_eta_script).run()
    assert not at.exception, at.exception
    bar = at.get("progress")[0].proto
    assert (bar.value, bar.text) == (20, "Indexing… 20/100 · 5.0/s · about 16 s left")


def held(gate: threading.Event, calls: list[int]):
    """A job's work that counts its runs and holds until `gate` opens."""

    def work(job: Job) -> str:
        calls.append(1)
        job.stage("features", 3, 10)
        gate.wait(30)
        job.stage("features", 10, 10)
        return "audit"

    return work


def test_starting_a_running_job_again_joins_it_and_a_finished_one_reruns() -> None:
    reg, gate, calls = Registry(), threading.Event(), []
    first = reg.start("audit:a", "Auditing", held(gate, calls), {"features": "Finding mistakes"})
    second = reg.start("audit:a", "Auditing", held(gate, calls))
    assert second is first and first.running
    fraction, text = first.view()
    assert fraction == pytest.approx(0.3) and text.startswith("features… 3/10")
    gate.set()
    assert first.wait(30) and first.status == "done" and first.result == "audit"
    assert calls == [1]  # the second start ran nothing
    # The silent step after the last count is named, with its seconds
    assert first.phase == "Finding mistakes" and not first.counted
    again = reg.start("audit:a", "Auditing", held(gate, calls))
    assert again is not first and again.wait(30) and calls == [1, 1]


def test_a_failure_is_kept_as_one_line_and_the_others_are_untouched() -> None:
    reg = Registry()
    ok = reg.start("index:x", "Indexing", lambda job: 42)
    assert ok.wait(30)

    def broken(job: Job) -> None:
        raise ValueError("no images under /data\n(checked 3 folders)")

    bad = reg.start("audit:y", "Auditing", broken)
    assert bad.wait(30) and bad.status == "failed"
    assert bad.error == "no images under /data (checked 3 folders)"
    assert bad.view() == (None, "Auditing failed: no images under /data (checked 3 folders)")
    assert reg.get("index:x").result == 42 and reg.get("audit:y") is bad


def test_finished_jobs_are_kept_two_per_kind() -> None:
    reg = Registry(keep=2)
    for n in range(4):
        assert reg.start(f"audit:{n}", "Auditing", lambda job: None).wait(30)
    reg.start("index:z", "Indexing", lambda job: None).wait(30)
    assert sorted(j.key for j in reg.jobs()) == ["audit:2", "audit:3", "index:z"]


@pytest.mark.slow
def test_home_shows_a_running_job_live_then_how_it_ended(
    intel_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCENESEEK_DATA", str(intel_small))
    monkeypatch.setenv("SCENESEEK_INDEX", str(tmp_path / "idx"))
    gate = threading.Event()
    job = registry().start(index_job_key(tmp_path / "idx"), "Encoding", held(gate, []))
    try:
        at = AppTest.from_file(str(PAGES / "home.py"), default_timeout=60).run()
        assert not at.exception, at.exception
        texts = [p.proto.text for p in at.get("progress")]
        assert any(t.startswith("features… 3/10") for t in texts), texts
        assert any("**Search index**: being built at" in m.value for m in at.markdown)
    finally:
        gate.set()
    assert job.wait(30)
    at.run()
    assert any(s.value.startswith("Encoding: done in") for s in at.success)
    assert any("**Search index**: none yet at" in m.value for m in at.markdown)
    registry().forget(job.key)
