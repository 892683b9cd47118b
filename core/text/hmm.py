"""Hidden Markov models over captions.

`KeywordHMM`: two hidden states, keyword (K) and non-keyword (N), over word observations
(hmmlearn's CategoricalHMM; MultinomialHMM means bag-of-words counts since hmmlearn 0.3).
Seeding uses the *training split only*: transitions from how mapping-table words follow each
other in training captions, K emissions from mapping-word counts blended with TF-IDF mass,
N emissions from the other words, start probability `start_keyword` (20%). Baum-Welch then
re-estimates all of it without labels, and Viterbi tags new text. Rare words share one
<unk> symbol so the emission matrix stays small; the model is fitted on a few long
sequences (captions concatenated) because hmmlearn's cost grows with the sequence count.

`CharHMM`: the study's character-level HMM (ASCII codes in, generated text out), kept as a
labelled demo; it never extracted keywords.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

KEYWORD, OTHER = 0, 1
UNK = "<unk>"


@dataclass
class HMMConfig:
    start_keyword: float = 0.2  # prior share of keyword states (the study's example)
    min_count: int = 3  # rarer training words become <unk>
    max_vocab: int = 4000
    tfidf_blend: float = 0.1  # share of K emission mass seeded from TF-IDF, not the table
    n_iter: int = 10
    n_chunks: int = 8  # concatenate training captions into this many sequences
    tol: float = 1e-3
    random_state: int = 0


def _normalize(v: np.ndarray) -> np.ndarray:
    s = v.sum(axis=-1, keepdims=True)
    return v / np.where(s > 0, s, 1)


@dataclass
class KeywordHMM:
    vocab: dict[str, int]
    model: object  # hmmlearn.hmm.CategoricalHMM
    config: HMMConfig
    seed_model: object  # the seeded model before Baum-Welch, for comparison
    info: dict = field(default_factory=dict)

    @property
    def unk(self) -> int:
        return self.vocab[UNK]

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        return np.array([self.vocab.get(t, self.unk) for t in tokens], dtype=np.int64)

    def tag_many(
        self, token_lists: Sequence[Sequence[str]], seeded: bool = False
    ) -> list[list[bool]]:
        """Viterbi keyword tags (True = keyword state) for each token list."""
        model = self.seed_model if seeded else self.model
        nonempty = [t for t in token_lists if t]
        out: list[list[bool]] = []
        if nonempty:
            x = np.concatenate([self.encode(t) for t in nonempty]).reshape(-1, 1)
            _, states = model.decode(x, [len(t) for t in nonempty], algorithm="viterbi")
        else:
            states = np.zeros(0, dtype=int)
        pos = 0
        for toks in token_lists:
            out.append([bool(s == KEYWORD) for s in states[pos : pos + len(toks)]])
            pos += len(toks)
        return out

    def tag(self, tokens: Sequence[str]) -> list[bool]:
        return self.tag_many([tokens])[0]

    def keyword_posterior(self, tokens: Sequence[str]) -> list[float]:
        """P(keyword state | whole token list) per token (forward-backward)."""
        if not tokens:
            return []
        post = self.model.predict_proba(self.encode(tokens).reshape(-1, 1))
        return post[:, KEYWORD].tolist()

    def top_emissions(self, n: int = 20) -> list[tuple[str, float]]:
        words = {i: w for w, i in self.vocab.items()}
        e = self.model.emissionprob_[KEYWORD]
        return [(words[i], float(e[i])) for i in np.argsort(-e)[:n]]


def build_vocab(
    token_lists: Sequence[Sequence[str]], keep: set[str], cfg: HMMConfig
) -> dict[str, int]:
    counts = Counter(t for toks in token_lists for t in toks)
    frequent = [w for w, n in counts.most_common(cfg.max_vocab) if n >= cfg.min_count]
    words = sorted(set(frequent) | (keep & set(counts)))
    vocab = {w: i for i, w in enumerate(words)}
    vocab[UNK] = len(vocab)
    return vocab


def fit_keyword_hmm(
    train_tokens: Sequence[Sequence[str]],
    keyword_forms: set[str],
    idf: MappingABC[str, float],
    config: HMMConfig | None = None,
) -> KeywordHMM:
    """Seed from the training split's mapping-table words and TF-IDF, then Baum-Welch."""
    from hmmlearn.hmm import CategoricalHMM

    cfg = config or HMMConfig()
    seqs = [list(t) for t in train_tokens if t]
    if not seqs:
        raise ValueError("no training captions with content words to fit the HMM on")
    vocab = build_vocab(seqs, keyword_forms, cfg)
    v = len(vocab)
    unk = vocab[UNK]

    # Transitions and emissions counted from the table's labels on training captions.
    trans = np.ones((2, 2))
    emit = np.ones((2, v)) * 0.01
    tfidf_mass = np.zeros(v)
    for toks in seqs:
        states = [KEYWORD if t in keyword_forms else OTHER for t in toks]
        for a, b in itertools.pairwise(states):
            trans[a, b] += 1
        tf = Counter(toks)
        for t, s in zip(toks, states, strict=True):
            i = vocab.get(t, unk)
            emit[s, i] += 1
        for t, n in tf.items():
            tfidf_mass[vocab.get(t, unk)] += n / len(toks) * idf.get(t, 0.0)
    emit_k = (1 - cfg.tfidf_blend) * _normalize(emit[KEYWORD]) + cfg.tfidf_blend * _normalize(
        tfidf_mass + 1e-9
    )
    emission = np.vstack([emit_k, _normalize(emit[OTHER])])

    def new_model(n_iter: int) -> CategoricalHMM:
        m = CategoricalHMM(
            n_components=2,
            n_features=v,
            n_iter=n_iter,
            tol=cfg.tol,
            init_params="",
            params="ste",
            random_state=cfg.random_state,
        )
        m.startprob_ = np.array([cfg.start_keyword, 1 - cfg.start_keyword])
        m.transmat_ = _normalize(trans)
        m.emissionprob_ = emission.copy()
        return m

    seed = new_model(0)
    model = new_model(cfg.n_iter)
    x = np.concatenate([np.array([vocab.get(t, unk) for t in s]) for s in seqs]).reshape(-1, 1)
    lengths = _chunk_lengths(len(x), cfg.n_chunks)
    model.fit(x, lengths)
    swapped = _fix_state_order(model, [vocab[w] for w in keyword_forms if w in vocab])
    info = {
        "vocab_size": v,
        "train_captions": len(seqs),
        "train_tokens": len(x),
        "sequences": len(lengths),
        "iterations": int(model.monitor_.iter),
        "converged": bool(model.monitor_.converged),
        "states_swapped": swapped,
        "seed_transmat": _normalize(trans).tolist(),
        "transmat": model.transmat_.tolist(),
        "startprob": model.startprob_.tolist(),
    }
    log.info("keyword HMM: %s", info)
    return KeywordHMM(vocab, model, cfg, seed, info)


def _chunk_lengths(n: int, chunks: int) -> list[int]:
    chunks = max(1, min(chunks, n))
    base = n // chunks
    return [base] * (chunks - 1) + [n - base * (chunks - 1)]


def _fix_state_order(model, keyword_ids: list[int]) -> bool:
    """Baum-Welch has no labels; keep state 0 the one that emits the table's words."""
    if not keyword_ids:
        return False
    mass = model.emissionprob_[:, keyword_ids].sum(axis=1)
    if mass[KEYWORD] >= mass[OTHER]:
        return False
    perm = [1, 0]
    model.startprob_ = model.startprob_[perm]
    model.transmat_ = model.transmat_[np.ix_(perm, perm)]
    model.emissionprob_ = model.emissionprob_[perm]
    return True


# --- the study's character-level HMM, as a demo ----------------------------------------------

CHARS = [chr(c) for c in range(32, 127)]  # printable ASCII; anything else becomes "?"


@dataclass
class CharHMM:
    model: object
    n_chars: int

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        n_states: int = 8,
        n_iter: int = 10,
        max_chars: int = 100_000,
        random_state: int = 0,
    ) -> CharHMM:
        from hmmlearn.hmm import CategoricalHMM

        joined = " ".join(texts)[:max_chars]
        codes = encode_chars(joined)
        m = CategoricalHMM(
            n_components=n_states,
            n_features=len(CHARS),
            n_iter=n_iter,
            random_state=random_state,
        )
        m.fit(codes.reshape(-1, 1))
        return cls(m, len(codes))

    def generate(self, n: int = 120, random_state: int = 0) -> str:
        x, _ = self.model.sample(n, random_state=random_state)
        return "".join(CHARS[i] for i in x.ravel())


def encode_chars(text: str) -> np.ndarray:
    q = CHARS.index("?")
    return np.array([ord(c) - 32 if 32 <= ord(c) < 127 else q for c in text], dtype=np.int64)
