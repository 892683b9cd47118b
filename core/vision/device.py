"""Where the networks run and in what precision: the lowest module of core.vision, so that
features, inference and training all read one definition (no import circle between them)."""

from __future__ import annotations

import contextlib
import os

import torch

DEVICE_TYPES = ("cpu", "cuda", "mps")


class TrainingStopped(Exception):
    """Stopped on request; the run resumes from its last checkpoint. Here, below both the
    activation cache and the training loop, because either may raise it."""


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask: a container's or taskset's share,
    not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call on this platform
        return max(1, os.cpu_count() or 1)


def inference_threads() -> int:
    """Intra-op threads of an ONNX Runtime / OpenVINO session: the cores available, capped by
    torch's setting (OMP_NUM_THREADS, a Ray worker's CPUs, torch.set_num_threads), so a
    process given fewer CPUs than the machine has does not oversubscribe them."""
    return max(1, min(available_cores(), torch.get_num_threads()))


def pick_device(explicit: str | None = None) -> torch.device:
    """The explicit device, else cuda when available, else cpu."""
    if explicit:
        return torch.device(explicit)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(name: str | None) -> torch.device:
    """The device to train on: `name` (validated), else cuda when available, else cpu."""
    if not name:
        return pick_device()
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}; use cpu or cuda (cuda:N)") from None
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"unsupported device {name!r}; use cpu or cuda (cuda:N)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for but no CUDA GPU is available; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for but MPS is not available; use cpu")
    return dev


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision where it is fast: bf16 on CPUs with bf16 kernels, fp16 on CUDA."""
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA (with a GradScaler in training); float32 elsewhere: bf16 autocast
    does not pay on this project's CPUs, and float32 keeps cached and live results equal."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
