"""Inference for backbones and trained runs: OpenVINO / ONNX Runtime on CPUs, PyTorch on CUDA.

`load_inference(backbone, image_size)` (or `load_run_inference(trained)` for a trained run)
returns an `Inference`: the backbone's one eval transform (`transform`, PIL image -> float32
CHW tensor, core.vision.transforms, without torch's intra-op threads, which stall on a busy
machine) and `run(x)` giving named float32 outputs: "features"
(penultimate, pooled), "imagenet" (the pretrained ImageNet logits) and, for a run, "logits"
(its class head). A caller cannot pair a model with the wrong normalisation, input size or
backend.

On a CPU the module is exported once to ONNX (dynamo exporter, dynamic batch, fixed image size
because "same" padding depends on it) into `<cache>/onnx/`, keyed by backbone, weights, image
size, run checkpoint and library versions, and checked against PyTorch fp32 on two real photos
(fp32: cosine >= 0.999 on each and the same top-1 classes; bf16/int8: a sanity floor, their
cost is measured by benchmarks/precision_probe.py). What runs, backend="auto" and
precision="auto" (or $SCENESEEK_BACKEND / $SCENESEEK_PRECISION):
  1. OpenVINO in bf16, only when OpenVINO is asked for (see `_plan`);
  2. ONNX Runtime in int8 where the model at this image size passed the int8 quality check on
     validation photos and the CPU has VNNI (core.vision.quantize.int8_verdict: the figures
     are in the log and `Inference.reason`), unless full precision is asked for (amp=False);
  3. ONNX Runtime in fp32 (about 2.5x PyTorch eager on this project's CPUs);
  4. PyTorch, with `Inference.reason` (also logged) saying why the others were not used.
On CUDA, PyTorch on the GPU. A failed export or check is remembered beside the export, so it
is not retried on every load. int8 is the export statically quantised by ONNX Runtime
(core.vision.quantize), calibrated on photos the caller gives or, without them (and always
for "auto"), on the built-in calibration.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.config import inference_backend, inference_precision
from core.io import atomic_path, atomic_write_json
from core.vision.quantize import (  # noqa: F401 (re-exported)
    INT8_CALIBRATION,
    Calibration,
    cpu_has_vnni,
    int8_ident,
    int8_verdict,
    quantize_int8,
)
from core.vision.transforms import EvalTransform, eval_transform  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

BACKENDS = ("auto", "openvino", "onnxruntime", "torch")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
EXPORT_VERSION = 1
OPSET = 18
PARITY_COSINE = 0.999  # fp32 export against PyTorch fp32, per image
REDUCED_COSINE = 0.98  # bf16/int8 against fp32, mean over the check photos: a sanity floor
# Why "auto" is fp32 and not int8 (followed by core.vision.quantize.int8_verdict's reason).
AUTO_FP32 = "precision auto is fp32"
SPIN = False  # ONNX Runtime's spin-waiting between operators (measured: see OrtRunner)


# --- runners ---------------------------------------------------------------------------------


class _Outputs(nn.Module):
    """A module returning the named outputs as a tuple (what is exported and run)."""

    def __init__(self, model: nn.Module, outputs: tuple[str, ...], imagenet_head: Any) -> None:
        super().__init__()
        self.model = model
        self.names = outputs
        self.imagenet_head = imagenet_head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if hasattr(self.model, "forward_with_features"):  # a run's SceneClassifier
            feats, logits = self.model.forward_with_features(x)
        else:
            feats, logits = self.model(x), None
        got = {"features": feats, "logits": logits}
        if "imagenet" in self.names:
            got["imagenet"] = self.imagenet_head(feats)
        return tuple(got[n] for n in self.names)


class TorchRunner:
    """PyTorch eager: inference mode, channels-last, autocast where it is fast (bf16 on CPUs
    with bf16 kernels, fp16 on CUDA) when `amp`."""

    def __init__(self, module: _Outputs, device: torch.device, amp: bool) -> None:
        self.module = module.eval().to(device, memory_format=torch.channels_last)
        self.device = device
        self.amp = amp

    def __call__(self, x: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        from core.vision.device import autocast

        x = torch.as_tensor(x).to(self.device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device, self.amp):
            outs = self.module(x)
        return {n: o.float().cpu().numpy() for n, o in zip(self.module.names, outs, strict=True)}


class OrtRunner:
    """An onnxruntime CPU session over an exported file."""

    def __init__(
        self,
        path: Path,
        outputs: tuple[str, ...],
        threads: int | None = None,
        spin: bool = SPIN,
    ) -> None:
        import onnxruntime as ort

        from core.vision.device import inference_threads

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or inference_threads())
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads spin between operators by default, taking the core the decode
        # thread needs (see SPIN).
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.names = outputs

    def __call__(self, x: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        outs = self.session.run(list(self.names), {"x": x})
        return dict(zip(self.names, outs, strict=True))


_CONCURRENT: dict[tuple[str, tuple[str, ...]], OrtRunner] = {}
_CONCURRENT_LOCK = threading.Lock()


def concurrent_runner(inference: Inference) -> OrtRunner | None:
    """A one-thread ONNX Runtime session over the file `inference` runs, for several threads
    to run batches side by side (core.vision.features.make_loader's `infer`; a session's
    run is thread-safe); None where that does not apply (PyTorch, OpenVINO, an accelerator)."""
    if inference.backend != "onnxruntime" or inference.path is None:
        return None
    if inference.device.type != "cpu":
        return None
    key = (str(inference.path), tuple(inference.outputs))
    with _CONCURRENT_LOCK:
        if key not in _CONCURRENT:
            _CONCURRENT[key] = OrtRunner(inference.path, inference.outputs, threads=1)
        return _CONCURRENT[key]


class OpenVinoRunner:
    """An OpenVINO CPU model compiled from the same export; bf16 runs on the CPU's bf16 units
    (AMX or AVX512-BF16), accumulating in fp32."""

    def __init__(
        self, path: Path, outputs: tuple[str, ...], precision: str, threads: int | None = None
    ) -> None:
        import openvino as ov

        from core.vision.device import inference_threads

        core = ov.Core()
        # OpenVINO's compiled-model cache beside the export: later loads skip compilation.
        core.set_property({"CACHE_DIR": str(path.parent / "openvino_cache")})
        cfg = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": int(threads or inference_threads()),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.model = core.compile_model(core.read_model(str(path)), "CPU", cfg)
        self.request = self.model.create_infer_request()
        self.names = outputs

    def __call__(self, x: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        res = self.request.infer({"x": np.ascontiguousarray(x, dtype=np.float32)})
        # copy: the request's output buffers are reused by the next call
        return {n: np.array(res[self.model.output(n)], np.float32) for n in self.names}


@dataclass
class Inference:
    """A model ready to run, with the preprocessing that matches it (see module doc)."""

    name: str
    image_size: int
    transform: Callable[[Image.Image], torch.Tensor]
    outputs: tuple[str, ...]
    backend: str  # "openvino" | "onnxruntime" | "torch"
    precision: str  # "bf16" (openvino) | "fp32" | "int8"; "amp" | "fp32" (torch)
    reason: str  # why this backend, for logs and pages
    device: torch.device
    runner: Callable[[Any], dict[str, np.ndarray]] = field(repr=False)
    path: Path | None = None  # the ONNX file, when one runs
    calibration: str = ""  # int8 with the built-in calibration: its name (in `numerics`)

    def run(self, x: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """Named float32 outputs for a batch of transformed images (n, 3, size, size)."""
        if len(x) == 0:
            return {n: np.zeros((0, 0), np.float32) for n in self.outputs}
        return self.runner(x)

    def features(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        return self.run(x)["features"]

    def numerics(self) -> str:
        """What the output numbers depend on beyond the weights: part of feature cache keys."""
        base = f"{_SHORT[self.backend]}-{self.precision}"
        return f"{base}-{self.calibration}" if self.calibration else base

    def describe(self) -> str:
        return f"{self.name} on {self.backend} ({self.precision}): {self.reason}"


# --- export, check and cache -----------------------------------------------------------------


_SHORT = {"onnxruntime": "ort", "openvino": "ov", "torch": "torch"}


def openvino_missing() -> str | None:
    """Why OpenVINO bf16 cannot be used, or None when it can."""
    try:
        import openvino as ov
    except ImportError:
        return "openvino is not installed"
    try:
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # no CPU plugin, odd platforms
        return f"OpenVINO has no CPU device ({type(exc).__name__})"
    return None if "BF16" in caps else "this CPU has no bf16 units"


def onnxruntime_missing() -> str | None:
    """Why onnxruntime cannot be used, or None when it can."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"onnxruntime is not installed ({exc}); pip install onnxruntime"
    return None


def check_photos() -> list[Image.Image]:
    """Real photos that ship with scikit-learn (a temple, a flower): the export check runs on
    them offline, whatever data set is in use."""
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(im) for im in load_sample_images().images]


def _versions() -> dict[str, str]:
    import onnxruntime

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def export_key(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def export_onnx(module: _Outputs, image_size: int, path: Path) -> None:
    """Export `module` (a deep copy: the exporter must not touch the live model) with a dynamic
    batch axis; written atomically."""
    m = copy.deepcopy(module).float().cpu().eval()
    # A cross-backbone ensemble reads 3 channels per member (core.vision.train.cross_model).
    channels = int(getattr(module.model, "in_channels", 3))
    x = torch.zeros(2, channels, image_size, image_size)  # batch 2: a 1 would be specialised away
    batch = torch.export.Dim("batch")
    with atomic_path(path) as tmp, warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m,
            (x,),
            str(tmp),
            dynamo=True,
            opset_version=OPSET,
            input_names=["x"],
            output_names=list(module.names),
            dynamic_shapes=({0: batch},),
            verbose=False,
            optimize=True,
            external_data=False,
        )


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's optimiser logs hundreds of INFO lines per export: keep them out."""
    loggers = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # "[torch.onnx] Obtain model graph..."
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(den, 1e-12)


def parity(reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, Any]:
    """Cosine of the features and top-1 agreement of every logit output, per image."""
    out: dict[str, Any] = {
        "cosine": [float(c) for c in _cosines(reference["features"], got["features"])]
    }
    for name in ("imagenet", "logits"):
        if name in reference:
            out[f"{name}_top1_same"] = bool(
                np.array_equal(reference[name].argmax(1), got[name].argmax(1))
            )
    return out


def passes(check: dict[str, Any], precision: str) -> tuple[bool, str]:
    """(ok, reason) for a parity record. fp32 needs cosine >= 0.999 on every photo and the
    same top-1 classes. bf16 and int8 change the numbers by design (on Intel photos bf16 keeps
    cosine 0.999 on average, int8 0.99, and top-1 agreement is 96% / 85%), so here they only
    need a mean cosine >= 0.98, which catches a broken model; what they cost is measured on a
    linear probe by benchmarks/precision_probe.py."""
    cos = np.asarray(check["cosine"])
    strict = precision == "fp32"
    floor = PARITY_COSINE if strict else REDUCED_COSINE
    value = float(cos.min() if strict else cos.mean())
    if value < floor:
        why = f"{precision} export features differ from PyTorch (cosine {value:.4f} < {floor})"
        return False, why
    if strict:
        for k, same in check.items():
            if k.endswith("_top1_same") and not same:
                return False, f"{precision} export changes the {k.split('_')[0]} top-1 class"
    stat = "min" if strict else "mean"
    return True, f"checked against PyTorch fp32 on {len(cos)} photos (cosine {stat} {value:.4f})"


def _reference(module: _Outputs, images: list[Image.Image], transform: Any) -> tuple[Any, Any]:
    x = torch.stack([transform(im) for im in images])
    m = copy.deepcopy(module).float().cpu().eval()
    with torch.inference_mode():
        outs = m(x)
    return x, {n: o.numpy() for n, o in zip(module.names, outs, strict=True)}


def _compiled_or_none(
    engine: str,
    module: _Outputs,
    ident: dict[str, Any],
    transform: Any,
    image_size: int,
    cache_dir: Path,
    precision: str,
    calibration: Calibration,
) -> tuple[Any, Path | None, str]:
    """The checked runner (ONNX Runtime or OpenVINO) for `module`, exported and checked once
    per key; or (None, None, reason) when it cannot be used."""
    folder = cache_dir / "onnx"
    ident = {
        **ident,
        "export": EXPORT_VERSION,
        "opset": OPSET,
        "outputs": list(module.names),
        **_versions(),
    }
    key = export_key(ident)
    stem = f"{ident.get('backbone', 'model')}-{image_size}-{key}"
    fp32 = folder / f"{stem}.onnx"
    path, meta_path = fp32, folder / f"{stem}.json"
    if precision == "int8":
        qkey = export_key({"fp32": key, "int8": int8_ident(calibration)})
        path = folder / f"{stem}-int8-{qkey}.onnx"
        meta_path = path.with_suffix(".json")
    if engine == "openvino":  # the same file, its own check
        meta_path = meta_path.with_name(f"{meta_path.stem}-ov-{precision}.json")
    meta = _read_meta(meta_path)
    if meta is not None and not meta.get("ok"):
        return None, None, f"{meta.get('reason')} (remembered in {meta_path})"
    if not path.is_file():
        try:
            if not fp32.is_file():
                log.info("exporting %s to ONNX (once per key) -> %s", stem, fp32)
                export_onnx(module, image_size, fp32)
            if precision == "int8":
                quantize_int8(fp32, path, transform, calibration)
        except Exception as exc:  # exporter/quantiser errors are many and version-specific
            reason = f"ONNX export failed ({type(exc).__name__}: {str(exc)[:200]})"
            if not isinstance(exc, ImportError):  # a missing package is not remembered
                atomic_write_json(meta_path, {"ok": False, "reason": reason, "ident": ident})
            return None, None, reason
        meta = None
    try:
        runner: Any = (
            OpenVinoRunner(path, module.names, precision)
            if engine == "openvino"
            else OrtRunner(path, module.names)
        )
    except Exception as exc:  # a runtime that cannot load the file
        return None, None, f"{engine} cannot load {path.name} ({type(exc).__name__}: {exc})"
    if meta is None:
        x, ref = _reference(module, check_photos(), transform)
        check = parity(ref, runner(x))
        ok, why = passes(check, precision)
        meta = {"ok": ok, "reason": why, "check": check, "ident": ident, "precision": precision}
        atomic_write_json(meta_path, meta)
        if not ok:
            return None, None, why
    return runner, path, str(meta["reason"])


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _plan(
    device: torch.device, backend: str, precision: str, amp: bool = True, int8_ok: bool = False
) -> list[tuple[str, str]]:
    """(engine, precision) to try in order, ending with PyTorch. auto on a CPU: OpenVINO bf16
    when OpenVINO is asked for, then ONNX Runtime int8 where `int8_ok` (the model passed the
    int8 check here: core.vision.quantize.int8_verdict), then ONNX Runtime fp32; with
    amp=False (full precision asked for) "auto" means fp32. int8 runs on ONNX Runtime unless
    OpenVINO is asked for. On CUDA: PyTorch."""
    if backend == "auto":
        backend = inference_backend() or "auto"  # $SCENESEEK_BACKEND: what "auto" means
    if precision == "auto":
        precision = inference_precision() or ("auto" if amp else "fp32")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if backend == "torch" or device.type != "cpu":
        return [("torch", "")]
    plan: list[tuple[str, str]] = []
    # OpenVINO only when asked for: loaded in the same process as ONNX Runtime and LanceDB
    # (the app, the test suite) it crashed a later ORT feature extraction with a segfault.
    if backend == "openvino":
        plan.append(("openvino", "bf16" if precision in ("auto", "bf16") else precision))
    if backend in ("auto", "onnxruntime") and precision == "auto" and int8_ok:
        plan.append(("onnxruntime", "int8"))
    if backend in ("auto", "onnxruntime") or precision == "auto":
        plan.append(("onnxruntime", "int8" if precision == "int8" else "fp32"))
    return [*plan, ("torch", "")]


def _skip_reason(engine: str, device: torch.device, backend: str) -> str:
    if engine == "openvino":
        return openvino_missing() or ""
    if engine == "onnxruntime":
        return onnxruntime_missing() or ""
    return ""


def _build(
    name: str,
    module: _Outputs,
    ident: dict[str, Any],
    transform: Any,
    image_size: int,
    device: torch.device,
    backend: str,
    precision: str,
    amp: bool,
    cache_dir: str | Path | None,
    calibration: Calibration,
    int8: tuple[bool, str] = (False, "int8 is not checked for trained runs"),
) -> Inference:
    """The first runner of `_plan` that exports, loads and passes its check. `int8`: whether
    "auto" may choose int8 here, and why (core.vision.quantize.int8_verdict)."""
    from core.config import resolve_cache_dir
    from core.vision.quantize import DEFAULT_CALIBRATION

    reasons: list[str] = []
    for engine, prec in _plan(device, backend, precision, amp, int8[0]):
        if engine == "torch":
            break
        # "auto"'s int8 is the checked one: the built-in calibration, whatever was given.
        cal = None if prec == "int8" and precision != "int8" else calibration
        missing = _skip_reason(engine, device, backend)
        if missing:
            reasons.append(missing)
            continue
        runner, path, why = _compiled_or_none(
            engine,
            module,
            ident,
            transform,
            image_size,
            resolve_cache_dir(cache_dir),
            prec,
            cal,
        )
        if runner is not None:
            if prec == "int8" and precision != "int8":
                why += f"; precision auto is int8: {int8[1]}"
            if prec == "fp32" and precision == "auto" and not inference_precision():
                why += f"; {AUTO_FP32}: {int8[1] if amp else 'full precision asked for'}"
            log.info("%s: %s %s (%s)", name, engine, prec, why)
            return Inference(
                name,
                image_size,
                transform,
                module.names,
                engine,
                prec,
                "; ".join([*reasons, why]),
                device,
                runner,
                path,
                DEFAULT_CALIBRATION if prec == "int8" and cal is None else "",
            )
        reasons.append(f"{engine} {prec} not used: {why}")
        log.warning("%s: %s", name, reasons[-1])
    if backend == "torch":
        reason = "PyTorch chosen explicitly"
    elif device.type != "cpu":
        reason = f"PyTorch on {device.type}"
    else:
        reason = "; ".join(reasons) or "PyTorch"
        log.warning("%s: running PyTorch instead (%s)", name, reason)
    tprec = "amp" if amp and (device.type == "cuda" or _cpu_bf16()) else "fp32"
    return Inference(
        name,
        image_size,
        transform,
        module.names,
        "torch",
        tprec,
        reason,
        device,
        TorchRunner(module, device, amp),
    )


def planned_numerics(
    device: str | torch.device | None,
    backend: str,
    precision: str,
    amp: bool,
    backbone: str = "",
    image_size: int = 0,
) -> str:
    """The numerics `load_inference` is expected to give (before exporting anything): lets a
    feature cache be found without loading a model. `backbone` (its name) and `image_size`
    tell whether "auto" may choose int8 (with the built-in calibration)."""
    from core.vision.device import pick_device
    from core.vision.quantize import DEFAULT_CALIBRATION

    dev = pick_device(str(device) if device is not None else None)
    int8_ok = bool(backbone) and int8_verdict(backbone, image_size)[0]
    for engine, prec in _plan(dev, backend, precision, amp, int8_ok):
        if engine != "torch" and not _skip_reason(engine, dev, backend):
            builtin = prec == "int8" and precision != "int8"
            return f"{_SHORT[engine]}-{prec}" + (f"-{DEFAULT_CALIBRATION}" if builtin else "")
    return "torch-amp" if amp and (dev.type == "cuda" or _cpu_bf16()) else "torch-fp32"


def _cpu_bf16() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def load_inference(
    backbone: Any,
    image_size: int | None = None,
    device: str | torch.device | None = None,
    backend: str = "auto",
    precision: str = "auto",
    amp: bool = True,
    cache_dir: str | Path | None = None,
    calibration: Calibration = None,
) -> Inference:
    """A pretrained backbone (core.vision.backbones.Backbone, holding its weights file's
    weights: the export is keyed by that file) ready to run: outputs "features" and
    "imagenet" (when it has an ImageNet head). Kept per backbone object and settings while the
    backbone lives, so repeated calls (train, validation, test features) load it once."""
    from core.vision.backbones import weights_stamp
    from core.vision.device import pick_device

    dev = pick_device(str(device) if device is not None else None)
    size = int(image_size or backbone.default_size)
    settings = (
        size,
        str(dev),
        backend,
        precision,
        amp,
        str(cache_dir),
        json.dumps(int8_ident(calibration)) if precision == "int8" else "",
        inference_backend(),
        inference_precision(),
    )

    def load() -> Inference:
        head = backbone.model.imagenet_head
        names = ("features", "imagenet") if head is not None else ("features",)
        ident = {
            "kind": "backbone",
            "backbone": backbone.name,
            "weights": weights_stamp(backbone.weights),
            "image_size": size,
        }
        return _build(
            backbone.name,
            _Outputs(backbone.model, names, head),
            ident,
            eval_transform(backbone, size),
            size,
            dev,
            backend,
            precision,
            amp,
            cache_dir,
            calibration,
            int8_verdict(backbone.name, size),
        )

    return attached(backbone, load, settings)


_ATTACHED: dict[tuple[int, Any], Inference] = {}


def attached(owner: Any, make: Callable[[], Inference], settings: Any = None) -> Inference:
    """The Inference made once for `owner` (a TrainedModel, a Backbone) and `settings`, kept
    while the owner lives: repeated calls do not reload the session."""
    key = (id(owner), settings)
    if key not in _ATTACHED:
        _ATTACHED[key] = make()
        weakref.finalize(owner, _ATTACHED.pop, key, None)
    return _ATTACHED[key]


def _file_sha256(path: str | Path) -> str:
    """Content hash: the same checkpoint reached by another path is the same export."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def softmax_np(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def load_run_inference(
    trained: Any,
    image_size: int | None = None,
    backend: str = "auto",
    precision: str = "auto",
    cache_dir: str | Path | None = None,
    amp: bool | None = None,
) -> Inference:
    """A trained run (core.vision.runs.TrainedModel) ready to run: "features", "logits" (its
    classes) and, for a linear probe (whose trunk is the pretrained one), "imagenet"."""
    from core.vision.backbones import weights_stamp

    bb = trained.backbone
    size = int(image_size or trained.config.image_size)
    head = bb.model.imagenet_head
    probe = trained.config.mode == "linear-probe" and head is not None
    names = ("features", "logits", "imagenet") if probe else ("features", "logits")
    module = _Outputs(trained.model, names, head if probe else None)
    ident = {
        "kind": "run",
        "backbone": bb.name,
        "weights": weights_stamp(bb.weights),
        "image_size": size,
        "checkpoint": _file_sha256(trained.checkpoint),
        "epoch": int(trained.epoch),
        "mode": trained.config.mode,
    }
    amp = bool(trained.config.amp) if amp is None else amp
    return _build(
        f"{bb.name} run",
        module,
        ident,
        eval_transform(bb, size),
        size,
        trained.device,
        backend,
        precision,
        amp,
        cache_dir,
        None,
    )
