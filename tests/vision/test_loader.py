"""The image loader's sizing (threads or processes from the cores this process may use) and
the threaded loader's batches on real photos: the same tensors, labels and flags, in the same
order, as decoding on the consumer's thread."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data.images import BadImageError
from core.vision import device as vdevice
from core.vision.backbones import create_backbone
from core.vision.features import (
    CORES_PER_DECODE_THREAD,
    DECODE_NICE,
    ThreadLoader,
    default_workers,
    make_loader,
    plan_loader,
)
from core.vision.transforms import eval_transform

SIZE = 64
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def transform():
    return eval_transform(create_backbone("efficientnet_lite0", None), SIZE)


@pytest.fixture(scope="module")
def photos(intel_small: Path) -> list[Path]:
    return sorted((intel_small / "seg_test").glob("*/*.jpg"))[:21]


@pytest.mark.parametrize(
    ("cores", "threads"),
    [(1, 1), (2, 1), (8, 1), (9, 2), (16, 2), (64, 8)],
)
def test_cpu_inference_decodes_in_threads_sized_from_the_cores(cores: int, threads: int) -> None:
    plan = plan_loader(None, shuffle=False, device=CPU, cores=cores)
    assert (plan.mode, plan.workers, plan.cores) == ("threads", threads, cores)
    assert threads == -(-cores // CORES_PER_DECODE_THREAD)


def test_training_and_accelerators_use_processes_and_explicit_workers_win() -> None:
    assert plan_loader(None, shuffle=True, device=CPU, cores=2).workers == 1
    assert plan_loader(None, shuffle=True, device=CPU, cores=1).workers == 1
    gpu = plan_loader(None, device=torch.device("cuda"), cores=16)
    assert (gpu.mode, gpu.workers) == ("processes", 8)
    assert plan_loader(None, device=torch.device("cuda"), cores=4).workers == 3
    assert plan_loader(3, device=CPU, cores=2) == plan_loader(3, cores=2)
    assert (plan_loader(3, cores=2).mode, plan_loader(3, cores=2).workers) == ("processes", 3)
    assert plan_loader(0, shuffle=True, cores=2).mode == "inline"


def test_cores_come_from_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vdevice.os, "sched_getaffinity", lambda pid: {3})
    assert vdevice.available_cores() == 1
    assert vdevice.inference_threads() == 1  # whatever torch's own default says
    assert plan_loader(None, device=CPU).cores == 1
    monkeypatch.setattr(vdevice.os, "sched_getaffinity", lambda pid: set(range(12)))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)  # OMP_NUM_THREADS, a Ray worker
    assert vdevice.available_cores() == 12
    assert vdevice.inference_threads() == 4
    assert default_workers() == 2


def test_threaded_batches_equal_inline_ones(photos: list[Path], transform) -> None:
    labels = list(range(len(photos)))
    threaded = make_loader(photos, labels, transform, batch_size=4, device=CPU)
    inline = make_loader(photos, labels, transform, batch_size=4, workers=0)
    assert isinstance(threaded, ThreadLoader) and not isinstance(inline, ThreadLoader)
    assert len(threaded) == len(inline) == 6  # 21 photos: five of 4 and one of 1
    got = list(threaded)
    want = list(inline)
    assert [len(y) for _, y in got] == [4, 4, 4, 4, 4, 1]
    for (xa, ya), (xb, yb) in zip(got, want, strict=True):
        assert xa.shape == (len(ya), 3, SIZE, SIZE) and xa.dtype == torch.float32
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.cat([y for _, y in got]).tolist() == labels  # file order kept
    again = torch.cat([x for x, _ in threaded])  # iterable twice (mirror TTA reads it twice)
    assert torch.equal(again, torch.cat([x for x, _ in want]))


def test_threaded_loader_flags_bad_files_and_raises_like_a_dataloader(
    photos: list[Path], transform, tmp_path: Path
) -> None:
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(photos[0].read_bytes()[:200])
    paths = [photos[0], bad, photos[1]]
    x, ok, reason = next(iter(make_loader(paths, None, transform, 8, unreadable_side=SIZE)))
    assert ok.tolist() == [True, False, True] and reason[0] == "" and reason[1]
    assert float(x[1].abs().sum()) == 0.0 and float(x[0].abs().sum()) > 0.0
    got = []
    with pytest.raises(BadImageError):  # training data: a bad file stops the run, as before
        got.extend(make_loader(paths, None, transform, 1))
    assert len(got) == 1  # the batch before it came through


def test_threaded_loader_decodes_ahead_off_the_consumer_thread(
    photos: list[Path], transform
) -> None:
    seen: set[str] = set()
    nice: set[int] = set()

    def spy(im):
        seen.add(threading.current_thread().name)
        nice.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return transform(im)

    loader = make_loader(photos, None, spy, batch_size=2, device=CPU)
    it = iter(loader)
    first = next(it)
    assert len(first[0]) == 2
    it.close()  # a consumer that stops early does not leave work queued
    assert seen and all(n.startswith("decode") for n in seen)
    assert nice == {min(os.getpriority(os.PRIO_PROCESS, 0) + DECODE_NICE, 19)}  # 19: the cap
    assert np.isfinite(first[0].numpy()).all()


def test_threads_that_decode_and_run_give_the_outputs_of_one_session(
    photos: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make_loader's `infer`: cores + 1 threads each decode a batch and run it on a one-thread
    ONNX Runtime session; the outputs, in file order, are the two-thread session's."""
    from core.vision.features import cached_features, outputs_of, run_outputs
    from core.vision.inference import concurrent_runner, load_inference

    backbone = create_backbone("efficientnet_lite0")
    inf = load_inference(backbone, SIZE, "cpu", "onnxruntime", "fp32", cache_dir=tmp_path)
    runner = concurrent_runner(inf)
    assert runner is not None and runner is concurrent_runner(inf)  # one session per file
    assert runner.session.get_session_options().intra_op_num_threads == 1
    import core.vision.features as features

    monkeypatch.setattr(features, "available_cores", lambda: 2)
    fused = make_loader(photos, None, inf.transform, batch_size=4, device=CPU, infer=runner)
    assert isinstance(fused, ThreadLoader) and fused.threads == 3 and fused.nice == 0
    got = run_outputs(inf, fused)
    inline = make_loader(photos, None, inf.transform, batch_size=4, workers=0)
    want = run_outputs(inf, inline)
    assert got["features"].shape == (len(photos), backbone.feature_dim)
    for name in inf.outputs:
        assert np.allclose(got[name], want[name], atol=1e-4)
    batches = [b for b, _ in outputs_of(fused, inf)]
    assert [len(b[0]) for b in batches] == [4, 4, 4, 4, 4, 1]  # the batch, without the outputs
    # The pipeline's default path (no store) runs this way and gives the same features.
    feats, _ = cached_features(
        backbone, photos, SIZE, None, CPU, 4, None, backend="onnxruntime", precision="fp32"
    )
    assert np.allclose(feats, want["features"], atol=1e-4)
