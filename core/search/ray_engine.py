"""The Ray engine: encode the images of an index run on a Ray cluster with Ray Data.

Only the encoding moves to the cluster; deciding what needs work and writing the index stay
in core.search.store, shared with the local engine, so both produce the same rows. This
module imports nothing from store: the driver hands it the encoder's `spec()` (any
core.search.backend.EncoderBackend), so writer -> ray_engine is the only direction:

    paths (Arrow blocks) --map_batches(hash tasks)--> sha256        -> writer.plan (driver)
    todo paths --map_batches(decode tasks, CPU)--> input tensors, ok, reason
               --map_batches(_EncoderActor pool, concurrency=N, num_gpus=G)--> features...
               --iter_batches--> driver: writer._Writer.commit per chunk (merge_insert on path)

Why this shape:
- Decoding runs in stateless CPU tasks and the model in an actor pool, Ray's batch-inference
  pattern: the backbone loads once per actor (`__init__`), GPU actors are never starved by
  JPEG decoding, and each stage scales on its own. When both stages ask for the same
  resources (CPU actors), Ray Data fuses them into the actors, saving a copy of the tensors.
- The output streams back to the driver, which commits each chunk with the same
  `merge_insert` as the local engine instead of `write_lance` from the workers: the chunk
  stays the atomic resume unit, index.json is updated the same way after every commit, and
  the table is the one the app reads. The driver only receives vectors (a few KB per image),
  so it is not the bottleneck before tens of thousands of images per second.
- Faults: a worker process that dies takes its batch with it; Ray Data's defaults restart
  the actor (`max_restarts=-1`) and retry its batch (`max_task_retries=-1`; tasks:
  `max_retries=-1`), which tests/search/test_ray_cluster.py checks by killing one. Should a batch
  arrive twice, the driver keeps the first copy. An undecodable image is a
  row flagged not ok with its reason (core.search.embed.decode), recorded as skipped like in
  the local engine. An interrupted run keeps its committed chunks; re-running encodes only
  files whose path and content hash are not in the table.
- Workers import `core` (install the project on every node, as for any Ray job).

Ray is imported inside functions only: `--engine local` never imports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.config import ray_batch_delay
from core.search.backend import EncoderSpec
from core.vision.encodings import ACTIVATIONS  # the "numerics" of a partial run's batches

log = logging.getLogger(__name__)

HASH_BLOCK = 256  # paths per hashing task
RAW = "raw_"  # column prefix of the pretrained outputs an actor returns for the store
# keep(indices, numerics, {output name: (n, ...) float32}, ok): what the driver stores
RawSink = Callable[[list[int], str, dict[str, np.ndarray], np.ndarray], None]


@dataclass
class RayOptions:
    """Where and how wide to run. address None starts a Ray instance in this process
    (num_cpus of this machine unless given); "auto" joins the cluster this machine belongs
    to; "HOST:PORT" connects to a head's GCS. "ray://" (Ray Client) is refused: Ray Data's
    streaming executor needs a real driver (with Ray 2.60 it fails with "'Worker' object
    has no attribute 'core_worker'"), so run the command on a node or as a Ray job."""

    address: str | None = None
    workers: int = 1  # encoder actors
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    resources: dict[str, float] = field(default_factory=dict)  # per actor/task: node placement
    num_cpus: int | None = None  # only for a Ray instance started here

    def __post_init__(self) -> None:
        if self.address and self.address.startswith("ray://"):
            raise ValueError(
                f"--address {self.address}: Ray Data cannot run over Ray Client (ray://). Run "
                "the command on a cluster node with --address auto (or HEAD_IP:6379), or "
                "submit it as a job: ray job submit --address http://HEAD_IP:8265 "
                "-- python -m core index ... --engine ray --address auto"
            )
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, not {self.workers}")


@contextlib.contextmanager
def session(opts: RayOptions) -> Iterator[None]:
    """Connect to (or start) Ray for one run; a Ray instance started here is stopped after."""
    import ray

    started = not ray.is_initialized()
    if started:
        kw: dict[str, Any] = {"address": opts.address, "log_to_driver": False}
        if opts.address is None:
            kw.update(num_cpus=opts.num_cpus, include_dashboard=False)
        ray.init(**kw)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI shows its own bar, driven by the commits
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _blocks(columns: dict[str, Sequence], rows_per_block: int) -> list:
    """Arrow tables of at most rows_per_block rows: one Ray Data block each, so the work
    spreads over the cluster from the first stage."""
    import pyarrow as pa

    table = pa.table({k: list(v) for k, v in columns.items()})
    n = max(1, rows_per_block)
    return [table.slice(k, n) for k in range(0, max(1, table.num_rows), n)]


def _hash_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from core.search.uri import file_sha256

    return {"i": batch["i"], "sha256": np.array([file_sha256(p) for p in batch["path"]])}


def hash_paths(
    paths: Sequence[str],
    opts: RayOptions,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Content hashes of `paths`, computed by Ray tasks on the cluster ("" = unreadable);
    `progress(done, total)` after every block that comes back."""
    import ray

    if not paths:
        return []
    ds = ray.data.from_arrow(_blocks({"i": range(len(paths)), "path": paths}, HASH_BLOCK))
    ds = ds.map_batches(
        _hash_batch,
        batch_size=None,
        batch_format="numpy",
        num_cpus=1,
        resources=opts.resources or None,
    )
    out = [""] * len(paths)
    done = 0
    for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for i, sha in zip(b["i"], b["sha256"], strict=True):
            out[int(i)] = str(sha)
        done += len(b["i"])
        if progress:
            progress(done, len(paths))
    return out


def _decode_batch(batch: dict[str, np.ndarray], transform: Any, size: int) -> dict[str, Any]:
    import torch

    from core.search.embed import decode

    # The local engine decodes in DataLoader workers with torch's default threads per process;
    # one thread here keeps a CPU task on its one CPU.
    torch.set_num_threads(1)
    xs, oks, reasons = zip(*(decode(str(p), transform, size) for p in batch["path"]), strict=True)
    return {
        "i": batch["i"],
        "x": torch.stack(xs).numpy(),
        "ok": np.array(oks, dtype=bool),
        "reason": np.array(reasons, dtype=object),
    }


class _EncoderActor:
    """One per actor: loads the backbone once, then encodes decoded batches."""

    def __init__(self, spec: EncoderSpec, raw: bool = False):  # any backend's spec
        from core.search.encoders import create_image_encoder

        self.encoder = create_image_encoder(spec)
        # raw: also return the pretrained backbone's outputs the rows derive from, for the
        # driver to write into its encoding store (core.vision.encodings); None when the
        # encoder has no such outputs (CLIP, a run that changed the trunk).
        outputs = getattr(self.encoder, "outputs_inference", None)
        self.raw = outputs() if raw and outputs is not None else None
        self.tails = None  # a partial run: its rows come from activations, returned too
        if raw and getattr(self.encoder, "run", None) is not None:
            from core.search.partial_rows import RunTails

            tails = RunTails(self.encoder)
            self.tails = tails if tails.identity() is not None else None
        # Fault injection ($SCENESEEK_RAY_BATCH_DELAY): a worker can be killed while a batch is
        # in flight. Read in the actor, i.e. on the worker node.
        self.delay = ray_batch_delay()
        log.info("encoder actor ready in pid %s (%s)", os.getpid(), spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        if self.delay:
            time.sleep(self.delay)
        x = np.require(batch["x"], np.float32, ["C", "W"])  # Arrow-backed batches are read-only
        raw: dict[str, np.ndarray] = {}
        numerics = ""
        if self.tails is not None:  # one frozen pass: the activations, the rows from them
            from core.vision.activations import ACT, frozen_pair

            self.tails.frozen.eval()
            raw = {ACT: frozen_pair(self.tails.frozen, torch.from_numpy(x), self.encoder.device)}
            enc, numerics = self.tails.rows(raw[ACT]), ACTIVATIONS
        elif self.raw is not None:  # one pass: the stored outputs, and the rows from them
            raw = self.raw.run(torch.from_numpy(x))
            enc, numerics = self.encoder.from_outputs(raw), self.raw.numerics()
        else:
            enc = self.encoder.encode_tensor(torch.from_numpy(x))
        out = {
            "i": batch["i"],
            "ok": batch["ok"],
            "reason": batch["reason"],
            "features": enc.features,
            "top_ids": enc.top_ids,
            "top_probs": enc.top_probs,
        }
        if enc.probs is not None:
            out["probs"] = enc.probs
        if raw:
            out.update({RAW + n: np.asarray(v, np.float32) for n, v in raw.items()})
            out["numerics"] = np.array([numerics] * len(x))
        return out


def encode_batches(
    spec: EncoderSpec,
    paths: Sequence[str],
    idx: Sequence[int],
    opts: RayOptions,
    batch_size: int,
    transform: Any = None,
    keep: RawSink | None = None,
) -> Iterator[tuple[list[int], Any]]:
    """(indices, embed.Encoded) per batch as the cluster finishes them (any order; each
    index exactly once). With `keep`, the actors also return the pretrained outputs the
    rows derive from, and keep(indices, numerics, outputs, ok) gets each batch's before it
    is yielded (the driver writes them into its encoding store)."""
    import ray

    from core.search.backend import Encoded

    if transform is None:  # the driver passes its encoder's; this loads the model once more
        from core.search.encoders import create_image_encoder

        transform = create_image_encoder(spec).transform()
    resources = opts.resources or None
    ds = ray.data.from_arrow(_blocks({"i": list(idx), "path": list(paths)}, batch_size))
    ds = ds.map_batches(
        _decode_batch,
        batch_size=batch_size,
        batch_format="numpy",
        fn_kwargs={"transform": transform, "size": spec.image_size},
        num_cpus=1,
        resources=resources,
    )
    ds = ds.map_batches(
        _EncoderActor,
        batch_size=batch_size,
        batch_format="numpy",
        fn_constructor_kwargs={"spec": spec, "raw": keep is not None},
        compute=ray.data.ActorPoolStrategy(size=max(1, opts.workers)),
        num_cpus=opts.cpus_per_worker,
        num_gpus=opts.gpus_per_worker or None,
        resources=resources,
    )
    seen: set[int] = set()
    for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ids = [int(i) for i in b["i"]]
        keep_rows = np.array([i not in seen for i in ids], dtype=bool)
        if not keep_rows.any():
            continue
        seen.update(ids)
        kept = [i for i, k in zip(ids, keep_rows, strict=True) if k]
        if keep is not None and "numerics" in b:
            raw = {
                k[len(RAW) :]: np.asarray(v, np.float32)[keep_rows]
                for k, v in b.items()
                if k.startswith(RAW)
            }
            keep(kept, str(b["numerics"][0]), raw, np.asarray(b["ok"], bool)[keep_rows])
        yield (
            kept,
            Encoded(
                features=np.asarray(b["features"], np.float32)[keep_rows],
                top_ids=np.asarray(b["top_ids"], np.int32)[keep_rows],
                top_probs=np.asarray(b["top_probs"], np.float32)[keep_rows],
                probs=np.asarray(b["probs"], np.float32)[keep_rows] if "probs" in b else None,
                ok=np.asarray(b["ok"], bool)[keep_rows],
                reasons=[str(r) or None for r, k in zip(b["reason"], keep_rows, strict=True) if k],
            ),
        )
