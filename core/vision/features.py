"""Batched image loading and feature extraction, cached in the encoding store
(core.vision.encodings: one entry per encoder and file content, shared by every command).

`cached_features` runs the backbone through `core.vision.inference` (ONNX Runtime int8
where checked, else fp32, on CPUs; PyTorch on CUDA; see there): the backend and its
preprocessing come together. The PyTorch path runs under inference_mode, channels-last and,
when `amp`, bf16 autocast on CPUs with bf16 kernels (fp16 on CUDA). Features are stored as float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import types
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from core.data.images import check_image, load_rgb
from core.io import file_stamp
from core.vision.backbones import weights_stamp
from core.vision.device import autocast, available_cores

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
FEATURE_CACHE_VERSION = 1
# Images per OpenVINO / ONNX Runtime call on a CPU, chosen by measurement
# (benchmarks/features.py --sweep; see the README's CNN inference section).
CPU_BATCH = 16


# Niceness added to decode threads: ONNX Runtime's threads come first and decoding fills
# their pauses (measured on 2 busy cores: end to end 91% of the model alone at 0, 95% at 10).
DECODE_NICE = 10
# Decode threads per core of inference: one thread decodes, resizes and normalises about
# 1,100 Intel photos/s, about 10x what a core of ONNX Runtime encodes (benchmarks/features.py).
CORES_PER_DECODE_THREAD = 8


@dataclass(frozen=True)
class LoaderPlan:
    """How a loader decodes: "threads" (in this process, ahead of the consumer: inference on
    a CPU), "processes" (DataLoader worker processes: training's shuffled, augmented batches
    and accelerators, where decoding is the limit) or "inline" (on the consumer's thread)."""

    mode: str
    workers: int
    cores: int

    def describe(self) -> str:
        return f"{self.workers} decode {self.mode} on {self.cores} cores"


def plan_loader(
    workers: int | None = None,
    shuffle: bool = False,
    device: torch.device | None = None,
    cores: int | None = None,
) -> LoaderPlan:
    """Decoding sized from the cores this process may use (its affinity mask). An explicit
    `workers` keeps its old meaning: that many worker processes, 0 inline.

    Default, CPU inference: decode threads in this process, one per CORES_PER_DECODE_THREAD
    cores, while the session's own threads take every core. Measured on 2 cores
    (benchmarks/features.py): two forkserver worker processes beside two ONNX Runtime threads
    cost 2-3x against one decode thread at equal load (worker start-up re-imports torch, and
    four busy processes time-share two cores). With one thread: 0.84 of the model-only rate
    at load 5, 0.78 at load 3, where the model alone fills both cores and decoding's sixth of
    a core is what is missing.
    Training (shuffle) and accelerators: processes, as decoding there competes with nothing
    on the CPU (min(cores - 1, 8), at least 1)."""
    cores = cores or available_cores()
    if workers is not None:
        return LoaderPlan("processes" if workers > 0 else "inline", workers, cores)
    if shuffle or (device is not None and device.type != "cpu"):
        return LoaderPlan("processes", max(1, min(cores - 1, 8)), cores)
    return LoaderPlan("threads", -(-cores // CORES_PER_DECODE_THREAD), cores)


def default_workers() -> int:
    """Decode workers of the default CPU inference loader (threads; see `plan_loader`)."""
    return plan_loader().workers


class ImageFiles(Dataset):
    """The one torch Dataset over image files: each path decoded through
    core.data.images and transformed.

    Items are (tensor, label index), and a file that cannot be decoded raises BadImageError
    (training and evaluation read files the manifest checked). With `unreadable_side`
    (indexing whatever a folder holds) items are (tensor, ok, reason) instead: see
    `decode_or_flag`, whose `read` gives a file's bytes (core.search.uri.read_path_bytes
    reads URIs too; None: local paths)."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | None,
        transform: Any,
        unreadable_side: int | None = None,
        read: Callable[[str], bytes] | None = None,
    ):
        self.paths = [str(p) for p in paths]
        self.labels = list(labels) if labels is not None else [-1] * len(self.paths)
        self.transform = transform
        self.unreadable_side = unreadable_side
        self.read = read

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, bool, str]:
        if self.unreadable_side is not None:
            return decode_or_flag(self.paths[i], self.transform, self.unreadable_side, self.read)
        return self.transform(load_rgb(self.paths[i])), self.labels[i]


def decode_or_flag(
    path: str, transform: Any, side: int, read: Callable[[str], bytes] | None = None
) -> tuple[torch.Tensor, bool, str]:
    """(input tensor, ok, reason) for one file; never raises for bad data, so one bad file
    cannot kill a worker (a DataLoader's or a Ray task): an undecodable or unreadable file
    gives a zero `side` x `side` tensor, ok False and the reason."""
    source: str | bytes = path
    if read is not None:
        try:
            source = read(path)
        except OSError:
            return torch.zeros(3, side, side), False, "unreadable"
    check = check_image(source)
    if check.image is None:
        return torch.zeros(3, side, side), False, check.reason or "unreadable"
    return transform(check.image), True, ""


@contextlib.contextmanager
def _no_main_script() -> Iterator[None]:
    """Hide a script `__main__` while worker processes start. multiprocessing starts each
    forkserver worker (and the server) by running the launching script's file again as
    `__mp_main__`; under Streamlit that file is the page, which then runs inside the worker
    and starts loaders of its own ("DataLoader worker exited unexpectedly"). The workers need
    nothing from it: ImageFiles and the transforms live in importable modules. A `python -m`
    main (it has a spec) is left alone: multiprocessing does not re-run those."""
    main = sys.modules.get("__main__")
    if getattr(main, "__spec__", None) is not None or not getattr(main, "__file__", None):
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class _Loader(DataLoader):
    """A DataLoader whose worker processes start without re-running the main script."""

    def __iter__(self):  # the workers start here (persistent_workers is off)
        if self.num_workers == 0:
            return super().__iter__()
        with _no_main_script():
            return super().__iter__()


class ThreadLoader:
    """Batches in order, decoded by `threads` threads of this process up to `ahead` batches
    before the consumer: decoding (PIL releases the GIL while it decodes and resizes, numpy
    while it normalises) overlaps the inference call, which releases it too, with no worker
    process to start. Iterates like a DataLoader without workers (the same collated
    batches; `dataset`, `batch_size`, len)."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        threads: int,
        ahead: int = 2,
        nice: int = 0,
        infer: Callable[[Any], dict[str, np.ndarray]] | None = None,
    ) -> None:
        self.dataset = dataset
        self.batch_size = max(1, int(batch_size))
        self.threads = max(1, int(threads))
        self.ahead = max(1, int(ahead))
        self.nice = nice
        self.infer = infer  # set: each thread also runs its batch, appended to the batch

    def _lower_priority(self) -> None:
        import threading

        with contextlib.suppress(AttributeError, OSError):
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.nice)

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def _batch(self, start: int) -> Any:
        stop = min(start + self.batch_size, len(self.dataset))
        batch = collate_numpy([self.dataset[i] for i in range(start, stop)])
        return [*batch, self.infer(batch[0])] if self.infer is not None else batch

    def __iter__(self) -> Iterator[Any]:
        starts = iter(range(0, len(self.dataset), self.batch_size))
        pool = ThreadPoolExecutor(
            self.threads,
            thread_name_prefix="decode",
            initializer=self._lower_priority if self.nice else None,
        )
        pending: deque[Future] = deque()
        try:
            for start in starts:  # keep threads + ahead batches in flight, yield in order
                pending.append(pool.submit(self._batch, start))
                if len(pending) >= self.threads + self.ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # the consumer stopped early or a file failed: drop the queued work
            pool.shutdown(wait=True, cancel_futures=True)


def collate_numpy(items: list[tuple[Any, ...]]) -> list[Any]:
    """default_collate's batches (tensors stacked, numbers as a tensor, strings as a list)
    built with numpy: torch.stack runs on torch's OpenMP pool, whose threads then spin-wait
    beside ONNX Runtime's on the same cores (measured on 2 busy cores: 13.5 ms an image
    against 0.7 ms for np.stack)."""
    out: list[Any] = []
    for column in zip(*items, strict=True):
        first = column[0]
        if isinstance(first, torch.Tensor):
            out.append(torch.from_numpy(np.stack([t.numpy() for t in column])))
        elif isinstance(first, str):
            out.append(list(column))
        else:
            out.append(torch.as_tensor(np.asarray(column)))
    return out


def make_loader(
    paths: Sequence[str | Path],
    labels: Sequence[int] | None,
    transform: Any,
    batch_size: int = 64,
    shuffle: bool = False,
    workers: int | None = None,
    seed: int = 0,
    device: torch.device | None = None,
    unreadable_side: int | None = None,
    read: Callable[[str], bytes] | None = None,
    infer: Callable[[Any], dict[str, np.ndarray]] | None = None,
) -> DataLoader | ThreadLoader:
    """Every loader over image files (training, evaluation, features, indexing); see
    `ImageFiles` for `unreadable_side` and `read`, `plan_loader` for how `workers` (None:
    sized from the cores) decides between decode threads and worker processes.

    `infer` (a one-thread model: core.vision.inference.concurrent_runner), with decode
    threads: cores + 1 threads each decode a batch and run it, so no core waits on another
    (read the batches with `outputs_of`). Measured on 2 EPYC cores, 300 photos, load 1.5:
    one decode thread ahead of a two-thread session 132 img/s (0.77 of the model alone,
    170); two threads each decoding and running 153; three 163 (0.96). A two-thread session
    stalls at every operator while the decode thread holds one of its cores."""
    plan = plan_loader(workers, shuffle, device)
    data = ImageFiles(paths, labels, transform, unreadable_side, read)
    if plan.mode == "threads" and infer is not None:
        return ThreadLoader(data, batch_size, plan.cores + 1, infer=infer)
    if plan.mode == "threads":
        return ThreadLoader(data, batch_size, plan.workers, nice=DECODE_NICE)
    gen = torch.Generator().manual_seed(seed)
    return _Loader(
        data,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=plan.workers,
        generator=gen,
        pin_memory=device is not None and device.type == "cuda",
        persistent_workers=False,
        # Forking a process that already runs LanceDB, ONNX Runtime or OpenVINO threads can
        # crash the child (seen as a segfault in the full test run); forkserver starts clean.
        multiprocessing_context="forkserver" if plan.workers > 0 else None,
    )


def inference_loader(
    inference: Any,
    paths: Sequence[str | Path],
    batch_size: int,
    workers: int | None,
    device: torch.device,
    unreadable_side: int | None = None,
    read: Callable[[str], bytes] | None = None,
) -> DataLoader | ThreadLoader:
    """make_loader for encoding with `inference` (a core.vision.inference.Inference): its
    threads run the model too where that pays (`infer`); read it with `outputs_of`."""
    from core.vision.inference import concurrent_runner

    return make_loader(
        paths,
        None,
        inference.transform,
        batch_size,
        workers=workers,
        device=device,
        unreadable_side=unreadable_side,
        read=read,
        infer=concurrent_runner(inference),
    )


def batches(
    loader: DataLoader | ThreadLoader, device: torch.device, progress: Progress | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Move each batch to the device in channels-last layout; report images done."""
    done, total = 0, len(loader.dataset)
    for x, y in loader:
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        yield x, y.to(device, non_blocking=True)
        done += len(y)
        if progress:
            progress(done, total)


def extract_features(
    model: torch.nn.Module,
    loader: DataLoader | ThreadLoader,
    device: torch.device,
    amp: bool = True,
    progress: Progress | None = None,
) -> np.ndarray:
    """(n, d) float32 outputs of `model` over the loader, in order."""
    model.eval().to(device, memory_format=torch.channels_last)
    out: list[np.ndarray] = []
    with torch.inference_mode(), autocast(device, amp):
        for x, _ in batches(loader, device, progress):
            out.append(model(x).float().cpu().numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def feature_cache_key(backbone_id: dict[str, Any], paths: Sequence[str | Path]) -> str:
    """Key of (backbone, weights, preprocessing, every file's path + size + mtime)."""
    h = hashlib.sha256()
    h.update(json.dumps(backbone_id, sort_keys=True).encode())
    for p in paths:
        h.update(json.dumps(file_stamp(str(p))).encode())
    return h.hexdigest()[:24]


def outputs_of(
    loader: DataLoader | ThreadLoader, inference: Any
) -> Iterator[tuple[list[Any], dict[str, np.ndarray]]]:
    """(batch, outputs) in order: what the loader's threads ran (make_loader's `infer`) or,
    for any other loader, `inference.run` of the batch's images."""
    fused = getattr(loader, "infer", None) is not None
    for batch in loader:
        if fused:
            *batch, out = batch
        else:
            out = inference.run(batch[0])
        yield list(batch), out


def run_outputs(
    inference: Any, loader: DataLoader | ThreadLoader, progress: Progress | None = None
) -> dict[str, np.ndarray]:
    """Every output of a `core.vision.inference.Inference` over the loader, in order."""
    parts: dict[str, list[np.ndarray]] = {n: [] for n in inference.outputs}
    done, total = 0, len(loader.dataset)
    for (x, *_), out in outputs_of(loader, inference):
        for name, value in out.items():
            parts[name].append(value)
        done += len(x)
        if progress:
            progress(done, total)
    return {
        n: np.concatenate(v).astype(np.float32, copy=False) if v else np.zeros((0, 0), np.float32)
        for n, v in parts.items()
    }


def feature_ident(backbone: Any, image_size: int, amp: bool, numerics: str) -> dict[str, Any]:
    """What cached features depend on. The PyTorch path keeps the original key (its caches stay
    valid); other backends add their numerics ("ov-bf16", "ort-fp32", "ort-int8-<model>"):
    they are not the same numbers."""
    ident: dict[str, Any] = {
        "version": FEATURE_CACHE_VERSION,
        "backbone": backbone.name,
        "weights": weights_stamp(backbone.weights),
        "image_size": image_size,
        "amp": amp,
    }
    if not numerics.startswith("torch-"):
        ident["numerics"] = numerics
    return ident


def stored_outputs(
    store: Any,
    ident: dict[str, Any],
    inference: Any,
    paths: Sequence[str],
    hashes: Sequence[str],
    batch_size: int,
    workers: int | None,
    device: torch.device,
    progress: Progress | None = None,
    unreadable_side: int | None = None,
    read: Callable[[str], bytes] | None = None,
    flush: int = 512,
) -> Iterator[tuple[list[int], dict[str, np.ndarray], np.ndarray, list[str]]]:
    """Encode `paths` (the ones the store lacks) with `inference`, streaming: yields
    (positions, outputs, ok, reasons) per batch and writes the decoded ones into the store
    (core.vision.encodings) every `flush` images, so a stopped run keeps what it encoded.
    With `unreadable_side` an undecodable file comes back with ok False, not an error."""
    loader = inference_loader(inference, paths, batch_size, workers, device, unreadable_side, read)
    pending: list[tuple[list[int], dict[str, np.ndarray], np.ndarray]] = []

    def write() -> None:
        rows = [(i, k) for pos, _, ok in pending for k, i in enumerate(pos) if ok[k]]
        if rows:
            arrays = {
                n: np.concatenate([out[n][ok] for _, out, ok in pending]) for n in inference.outputs
            }
            store.put(ident, [hashes[i] for i, _ in rows], arrays)
        pending.clear()

    done = 0
    for batch, out in outputs_of(loader, inference):
        x = batch[0]
        flagged = unreadable_side is not None
        ok = batch[1].numpy().astype(bool) if flagged else np.ones(len(x), bool)
        reasons = [r or "" for r in batch[2]] if flagged else [""] * len(x)
        pos = list(range(done, done + len(x)))
        pending.append((pos, out, ok))
        yield pos, out, ok, reasons
        done += len(x)
        if sum(len(p) for p, _, _ in pending) >= flush:
            write()
        if progress:
            progress(done, len(paths))
    write()


def cached_features(
    backbone: Any,
    paths: Sequence[str | Path],
    image_size: int,
    cache_dir: str | Path | None,
    device: torch.device,
    batch_size: int | None = None,
    workers: int | None = None,
    amp: bool = True,
    progress: Progress | None = None,
    backend: str = "auto",
    precision: str = "auto",
    calibration: Sequence[str | Path] | None = None,
) -> tuple[np.ndarray, bool]:
    """Penultimate features of `paths`: `cached_outputs`' "features" (see there). Returns
    (features, from_cache)."""
    outs, hit = cached_outputs(
        backbone,
        paths,
        image_size,
        cache_dir,
        device,
        batch_size,
        workers,
        amp,
        progress,
        backend,
        precision,
        calibration,
    )
    return outs["features"], hit


def cached_outputs(
    backbone: Any,
    paths: Sequence[str | Path],
    image_size: int,
    cache_dir: str | Path | None,
    device: torch.device,
    batch_size: int | None = None,
    workers: int | None = None,
    amp: bool = True,
    progress: Progress | None = None,
    backend: str = "auto",
    precision: str = "auto",
    calibration: Sequence[str | Path] | None = None,
    names: Sequence[str] = ("features",),
) -> tuple[dict[str, np.ndarray], bool]:
    """Backbone outputs `names` of `paths` ("features": penultimate features, "imagenet":
    ImageNet logits; eval preprocessing), read from the encoding store
    (core.vision.encodings: one entry per encoder identity and file content) and encoded
    only for the files it lacks, which are then added. Returns ({name: (n, ...) float32}, from_cache):
    from_cache when nothing was encoded. batch_size None: CPU_BATCH on OpenVINO/ONNX
    Runtime, 64 on PyTorch. int8 without `calibration` uses the built-in calibration
    (core.vision.quantize). cache_dir None: nothing is stored."""
    from core.vision.encodings import EncodingStore, encoder_identity
    from core.vision.inference import load_inference, planned_numerics

    paths = [str(p) for p in paths]
    store = EncodingStore.at(cache_dir) if cache_dir is not None else None
    hashes = store.hashes(paths) if store is not None else []
    shape = (len(paths), backbone.feature_dim)

    def from_store(ident: dict[str, Any]) -> dict[str, np.ndarray] | None:
        if store is None or not paths or store.missing(ident, hashes):
            return None  # no files: nothing to read (the model loads, as it always did)
        try:
            got = {n: store.read(ident, hashes, n) for n in names}
        except KeyError:  # a damaged shard, set aside: encode its photos again
            return None
        if progress:
            progress(len(paths), len(paths))
        return got

    # Look before loading the model: a store hit needs no export and no session (int8: the
    # identity names the quantised model, known once it is loaded).
    if precision != "int8":
        planned = planned_numerics(device, backend, precision, amp, backbone.name, image_size)
        got = from_store(encoder_identity(backbone, image_size, planned, amp))
        if got is not None:
            return got, True
    inference = load_inference(
        backbone,
        image_size,
        device,
        backend,
        precision,
        amp,
        cache_dir=cache_dir,
        calibration=calibration,
    )
    numerics = inference.numerics()
    if inference.precision == "int8" and inference.path is not None and not inference.calibration:
        numerics += f"-{inference.path.stem}"  # the quantised model (its calibration) too
    if batch_size is None:
        batch_size = CPU_BATCH if inference.backend == "onnxruntime" else 64
    if store is None:
        loader = inference_loader(inference, paths, batch_size, workers, device)
        outs = run_outputs(inference, loader, progress)
        return {n: outs[n] for n in names}, False
    ident = encoder_identity(backbone, image_size, numerics, amp)
    got = from_store(ident)  # the planned backend fell back, and its entries are there
    if got is not None:
        return got, True
    if not paths:
        return {n: np.zeros(shape if n == "features" else (0, 0), np.float32) for n in names}, False
    _encode_missing(store, ident, inference, paths, hashes, batch_size, workers, device, progress)
    return {n: store.read(ident, hashes, n) for n in names}, False


def _encode_missing(
    store: Any,
    ident: dict[str, Any],
    inference: Any,
    paths: list[str],
    hashes: list[str],
    batch_size: int,
    workers: int | None,
    device: torch.device,
    progress: Progress | None,
) -> None:
    """Encode the files whose content the store lacks into it, one file per content
    (duplicates are encoded once); progress counts the files already there as done."""
    todo = store.missing(ident, hashes)
    first: dict[str, int] = {}
    for i in todo:
        first.setdefault(hashes[i], i)
    pick = sorted(first.values())
    have = len(paths) - len(todo)

    def report(done: int, total: int) -> None:
        if progress:
            progress(min(len(paths), have + done), len(paths))

    for _ in stored_outputs(
        store,
        ident,
        inference,
        [paths[i] for i in pick],
        [hashes[i] for i in pick],
        batch_size,
        workers,
        device,
        report,
    ):
        pass
    if progress:  # duplicates were not encoded, and are done too
        progress(len(paths), len(paths))
