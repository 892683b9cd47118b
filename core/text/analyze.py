"""`analyze_text`: keywords and categories of one sentence — the entry point search uses.

    from core.text import analyze_text, Mapping
    a = analyze_text("A serene lake surrounded by forest.", Mapping.load())
    a.keywords    # ['forest', 'serene', 'lake', ...] best first
    a.categories  # ['forest']
    a.scores      # {'forest': 1.0, ...} category scores in [0, 1]
    a.why         # ["'forest' is a mapping-table word for forest", ...]

Without a fitted `KeywordModel` it uses the mapping table alone (categories) and ranks the
other content words after the table's words. With one (from `fit_keyword_model`) it
adds the HMM's keyword tags, TF-IDF weights from the training captions and the classifier's
learned category probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.text.categories import Mapping
from core.text.model import KeywordModel
from core.text.preprocess import Preprocessor


@dataclass
class TextAnalysis:
    text: str
    tokens: list[str]
    keywords: list[str]  # best first; table words, then HMM-tagged, then by TF-IDF weight
    categories: list[str]  # categories with score >= threshold, best first
    scores: dict[str, float]  # every category's score in [0, 1]
    word_scores: dict[str, float] = field(default_factory=dict)  # keyword-ness per token
    tagged: list[str] = field(default_factory=list)  # tokens tagged keyword (table or HMM)
    why: list[str] = field(default_factory=list)


def analyze_text(
    text: str,
    mapping: Mapping | None = None,
    model: KeywordModel | None = None,
    threshold: float = 0.5,
    max_keywords: int = 10,
) -> TextAnalysis:
    """Keywords and categories of `text`. `mapping` defaults to the model's or the loaded table."""
    if mapping is None:
        mapping = model.mapping if model is not None else Mapping.load()
    prep = model.prep if model is not None else Preprocessor.default()
    tokens = prep.tokens(text)
    forms = mapping.forms()
    why: list[str] = []
    word_scores: dict[str, float] = {}
    idf = model.idf if model is not None else {}
    max_idf = max(idf.values(), default=1.0)
    hmm_tags = model.hmm.tag(tokens) if model is not None and model.hmm and tokens else []
    for i, t in enumerate(tokens):
        if t in forms:
            word_scores[t] = 1.0
            why.append(f"'{t}' is a mapping-table word for {', '.join(forms[t])}")
        elif hmm_tags and hmm_tags[i]:
            word_scores[t] = max(word_scores.get(t, 0.0), 0.9)
            why.append(f"'{t}' tagged keyword by the HMM")
        else:
            # Rarer words say more; unseen words get the highest idf.
            w = idf.get(t, max_idf) / max_idf if idf else 0.5
            word_scores[t] = max(word_scores.get(t, 0.0), round(0.8 * w, 4))
    tagged = [t for t in dict.fromkeys(tokens) if word_scores[t] >= 0.9]
    keywords = sorted(word_scores, key=lambda w: (-word_scores[w], tokens.index(w)))
    keywords = keywords[:max_keywords]

    scores = {c: 0.0 for c in mapping.names}
    for c in mapping.categories_of(tokens):
        scores[c] = 1.0
    clf = model.classifier if model is not None else None
    if clf is not None and clf.categories == mapping.names and tokens:
        learned = clf.learned_proba([tokens])[0]
        for c, p in zip(clf.categories, learned, strict=True):
            if scores[c] < 1.0 and p > scores[c]:
                scores[c] = round(float(p), 4)
                if p >= threshold:
                    why.append(f"{c}: learned word weights give {p:.2f}")
    categories = sorted((c for c, s in scores.items() if s >= threshold), key=lambda c: -scores[c])
    if not categories:
        why.append("no mapping-table word and no confident learned category")
    return TextAnalysis(text, tokens, keywords, categories, scores, word_scores, tagged, why)
