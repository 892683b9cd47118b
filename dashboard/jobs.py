"""Work that outlives a page: background jobs with progress, and the rate/ETA of any count.

A `Job` runs in a worker thread owned by the process-wide `registry()` (st.cache_resource),
keyed by what it computes, so switching pages (a new script run) neither stops nor restarts
it; starting the same key while it runs joins it. The worker never calls Streamlit: core's
callbacks only update the job's state under a lock, and pages read it with `job_panel`, a
fragment that polls every second and reruns the page once the job ends. Core stays pure:
this runner lives in the dashboard."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

log = logging.getLogger(__name__)

MIN_ITEMS = 3  # items counted before a rate is trusted (the first batch includes warm-up)
MIN_SECONDS = 1.0  # and seconds measured
POLL_SECONDS = 1.0
KEEP_FINISHED = 2  # jobs kept per kind (the part of the key before ':'): audits are large


def format_seconds(seconds: float) -> str:
    """'8 s', '3 min 20 s', '1 h 05 min': how long, for a person."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Rate:
    """The measured rate of a count and the time it leaves, from the first update of a stage:
    no estimate before MIN_ITEMS items and MIN_SECONDS (a guess from one batch misleads)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._stage: str | None = None
        self._start: tuple[int, float] = (0, 0.0)
        self._last: tuple[int, int, float] = (0, 0, 0.0)

    def update(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        if stage != self._stage or done < self._last[0]:
            self._stage, self._start = stage, (done, now)
        self._last = (done, total, now)

    def per_second(self) -> float | None:
        done, _total, now = self._last
        items, seconds = done - self._start[0], now - self._start[1]
        if items < MIN_ITEMS or seconds < MIN_SECONDS:
            return None
        return items / seconds

    def eta(self) -> float | None:
        rate = self.per_second()
        done, total, _ = self._last
        return None if rate is None else max(0, total - done) / rate

    def text(self) -> str:
        """' · 12.3/s · about 40 s left', or '' while too little is measured."""
        rate, eta = self.per_second(), self.eta()
        if rate is None or eta is None:
            return ""
        shown = f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"
        return f" · {shown}/s · about {format_seconds(eta)} left"


@dataclass
class Job:
    """One piece of background work and what a page shows of it. `after` names the silent
    step that follows a counted stage (e.g. {"features": "Finding label mistakes"}), so the
    wait after the last count still says what runs."""

    key: str
    label: str
    after: dict[str, str] = field(default_factory=dict)
    status: str = "running"  # running | done | failed
    phase: str = ""
    done: int = 0
    total: int = 0
    counted: bool = False  # False: a phase with no count (loading, fitting, writing)
    result: Any = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    started_at: str = field(default_factory=lambda: time.strftime("%H:%M:%S"))  # for people
    ended: float | None = None
    _phase_since: float = field(default_factory=time.monotonic)
    _rate: Rate = field(default_factory=Rate)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ended: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.phase = self.phase or f"{self.label}: starting"

    @property
    def running(self) -> bool:
        return self.status == "running"

    def progress(self, done: int, total: int) -> None:
        """Fits core's `progress=(done, total)` callbacks."""
        self.stage(self.label, done, total)

    def stage(self, name: str, done: int, total: int) -> None:
        """Fits core's `stage=(name, done, total)` callbacks."""
        if total and done >= total and name in self.after:
            self.note(self.after[name])
            return
        with self._lock:
            if name != self.phase or not self.counted:
                self._phase_since = time.monotonic()
            self.phase, self.done, self.total, self.counted = name, done, total, True
            self._rate.update(name, done, total)

    def note(self, text: str) -> None:
        """A step with no count; the panel shows how long it has run."""
        with self._lock:
            if text != self.phase or self.counted:
                self._phase_since = time.monotonic()
            self.phase, self.counted = text, False

    def finish(self, result: Any) -> None:
        with self._lock:
            self.result, self.status, self.ended = result, "done", time.monotonic()
        self._ended.set()

    def fail(self, error: str) -> None:
        with self._lock:
            self.error, self.status, self.ended = error, "failed", time.monotonic()
        self._ended.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (tests, the CLI-like callers); True when it has."""
        return self._ended.wait(timeout)

    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def view(self) -> tuple[float | None, str]:
        """(fraction or None for a phase with no count, the line to show)."""
        with self._lock:
            if self.status == "done":
                return 1.0, f"{self.label}: done in {format_seconds(self.elapsed())}"
            if self.status == "failed":
                return None, f"{self.label} failed: {self.error}"
            if not self.counted:
                since = format_seconds(time.monotonic() - self._phase_since)
                return None, f"{self.phase}… {since}"
            fraction = min(1.0, self.done / max(1, self.total))
            text = f"{self.phase}… {self.done}/{self.total}{self._rate.text()}"
            return fraction, f"{text} · {format_seconds(self.elapsed())} so far"


def one_line(exc: BaseException) -> str:
    """The exception as one line a person can read: its message, else its type."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class Registry:
    """The process's jobs by key. Threads are daemons: they end with the server."""

    def __init__(self, keep: int = KEEP_FINISHED) -> None:
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(
        self,
        key: str,
        label: str,
        work: Callable[[Job], Any],
        after: dict[str, str] | None = None,
    ) -> Job:
        """Run `work(job)` in a worker thread, or join the job of `key` that is running.
        A finished job of the same key is replaced (starting again means: compute again)."""
        with self._lock:
            old = self._jobs.get(key)
            if old is not None and old.running:
                return old
            job = Job(key, label, dict(after or {}))
            self._jobs.pop(key, None)  # re-inserted last: the newest job of its kind
            self._jobs[key] = job
            self._prune(key.split(":", 1)[0])
        threading.Thread(target=self._run, args=(job, work), name=f"job {key}", daemon=True).start()
        return job

    @staticmethod
    def _run(job: Job, work: Callable[[Job], Any]) -> None:
        try:
            result = work(job)
        except Exception as exc:  # shown on the page as one line; the traceback goes to the log
            log.exception("job %s failed", job.key)
            job.fail(one_line(exc))
        else:
            job.finish(result)

    def _prune(self, kind: str) -> None:
        finished = [
            k for k, j in self._jobs.items() if k.split(":", 1)[0] == kind and not j.running
        ]
        # the job being started counts: at most `keep` of a kind, running or finished
        for k in finished[: max(0, len(finished) - self.keep + 1)]:
            del self._jobs[k]

    def get(self, key: str) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def forget(self, key: str) -> None:
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not job.running:
                del self._jobs[key]


def index_job_key(index: str | Path) -> str:
    """The key of the build of a search index: one per folder at a time (a second start
    joins the running one; two writers of one index would be wrong anyway)."""
    return f"index:{Path(index).resolve()}"


@st.cache_resource(show_spinner=False)
def registry() -> Registry:
    """The one registry of this server process (shared by every session and page)."""
    return Registry()


def show_state(job: Job) -> None:
    """The job's progress line (a bar when counted), its one-line error, or that it is done."""
    fraction, text = job.view()
    if job.status == "failed":
        st.error(text)
    elif job.status == "done":
        st.success(text)
    elif fraction is None:  # a phase with no count: its seconds tick, so it is seen alive
        st.info(f"⏳ {text}")
    else:
        st.progress(fraction, text=text)


@st.fragment(run_every=POLL_SECONDS)
def job_panel(key: str) -> None:
    """The live progress of job `key`, polled; once it has ended the whole page reruns so it
    can show the result. Switching pages leaves the job running."""
    job = registry().get(key)
    if job is None:
        return
    if not job.running:
        st.rerun()
    show_state(job)
    st.caption(
        f"Started at {job.started_at} · runs in the background: other pages can be used "
        "meanwhile, and this one shows it when you come back."
    )


@st.fragment(run_every=POLL_SECONDS)
def _live_jobs() -> None:
    jobs = registry().jobs()
    for job in jobs:
        show_state(job)
    if not any(j.running for j in jobs):
        st.rerun()


def jobs_overview() -> None:
    """Every job of this process: live while any runs (Home shows it)."""
    jobs = registry().jobs()
    if not jobs:
        return
    st.markdown("**Background work**")
    if any(j.running for j in jobs):
        _live_jobs()
    else:
        for job in jobs:
            show_state(job)
