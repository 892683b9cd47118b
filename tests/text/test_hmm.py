"""Keyword HMM, the character-level demo, the classifier and analyze_text on real captions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from core.data.captions import read_captions
from core.text import analyze_text, fit_keyword_model
from core.text.categories import Mapping
from core.text.classify import classifier_accuracy, fit_classifier
from core.text.hmm import KEYWORD, CharHMM, HMMConfig, fit_keyword_hmm
from core.text.preprocess import Preprocessor
from core.text.tfidf import fit_tfidf
from tests.helpers import require_shared


@pytest.fixture(scope="module")
def real_tokens(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """Tokens of the first 2,000 real Flickr8k captions."""
    src = require_shared("flickr8k", "captions.txt")
    with open(src, encoding="utf-8") as fh:
        head = "".join(next(fh) for _ in range(2001))
    f = tmp_path_factory.mktemp("caps") / "captions.txt"
    f.write_text(head, encoding="utf-8")
    return Preprocessor.default().tokenize_all(read_captions(f).texts)


def test_hmm_tags_mapping_words_in_heldout_caption(real_tokens: list[list[str]]) -> None:
    mapping = Mapping.default()
    train = real_tokens[:1500]
    hmm = fit_keyword_hmm(train, set(mapping.forms()), fit_tfidf(train, top=0).idf())
    assert hmm.model.emissionprob_.shape == (2, len(hmm.vocab))
    assert np.allclose(hmm.model.transmat_.sum(axis=1), 1)
    assert hmm.info["sequences"] == 8 and hmm.info["iterations"] >= 1
    # A caption the model never saw; "mountains" and "snow" are table words.
    prep = Preprocessor.default()
    toks = prep.tokens("Two hikers walk through deep snow below the mountains .")
    tags = dict(zip(toks, hmm.tag(toks), strict=True))
    assert tags["snow"] and tags["mountains"]
    assert not tags["hikers"] and not tags["walk"]
    post = hmm.keyword_posterior(toks)
    assert post[toks.index("snow")] > 0.5 > post[toks.index("walk")]
    assert hmm.tag_many([[], toks]) == [[], hmm.tag(toks)]
    top = [w for w, _ in hmm.top_emissions(10)]
    assert set(top) & set(mapping.forms())


def test_hmm_unknown_words_and_state_order() -> None:
    corpus = [["snow", "dog", "runs"], ["dog", "snow"], ["cat", "snow", "sleeps"]] * 20
    hmm = fit_keyword_hmm(corpus, {"snow"}, {"snow": 1.0}, HMMConfig(min_count=1, n_chunks=3))
    assert hmm.model.emissionprob_[KEYWORD, hmm.vocab["snow"]] > 0.5
    assert hmm.encode(["zebra"]).tolist() == [hmm.unk]
    assert hmm.tag(["zebra", "snow"])[1] is True


def test_char_hmm_demo_generates_text() -> None:
    texts = ["A dog runs on the beach .", "Snow falls on the mountain ."] * 50
    demo = CharHMM.fit(texts, n_states=4, n_iter=3)
    out = demo.generate(80, random_state=1)
    assert len(out) == 80 and all(32 <= ord(c) < 127 for c in out)
    assert demo.n_chars == len(" ".join(texts))


def test_classifier_learns_context(real_tokens: list[list[str]]) -> None:
    mapping = Mapping.default()
    clf = fit_classifier(real_tokens[:1500], mapping)
    test = real_tokens[1500:]
    res = classifier_accuracy(clf, test)
    # context_only, recomputed with sklearn: argmax of the learned weights vs the table's one
    # category, over held-out captions the table gives exactly one category.
    y = mapping.label_matrix(test)
    single = [t for t, row in zip(test, y, strict=True) if row.sum() == 1]
    truth = [int(np.argmax(row)) for row in y if row.sum() == 1]
    learned = clf.learned_proba(single).argmax(axis=1)
    assert res["n"] == len(single) > 0
    assert res["n"] > 0 and 0.0 <= res["context_only"] <= 1.0
    assert res["context_only"] == pytest.approx(accuracy_score(truth, learned))
    majority = Counter(truth).most_common(1)[0][1] / len(truth)
    assert res["majority_baseline"] == pytest.approx(majority)
    assert res["context_only"] > majority  # context words alone beat always-the-commonest
    assert res["with_table"] >= 0.8  # the table decides these captions
    # Table words decide, whatever the learned weights say.
    assert "sea" in clf.predict([["dog", "beach"]])[0]
    weights = clf.word_weights(5)
    assert set(weights) == set(mapping.names)


def test_analyze_text_without_and_with_model(real_tokens: list[list[str]]) -> None:
    a = analyze_text("A serene lake surrounded by forest.", Mapping.default())
    assert a.categories == ["forest"] and a.keywords[0] == "forest"
    assert a.scores["forest"] == 1.0 and a.scores["sea"] == 0.0
    assert any("forest" in w for w in a.why)
    none = analyze_text("The sky is clear and blue.", Mapping.default())
    assert none.categories == [] and "no mapping-table word" in none.why[-1]
    assert analyze_text("", Mapping.default()).keywords == []


def test_analyze_text_with_fitted_model(tmp_path: Path) -> None:
    src = require_shared("flickr8k", "captions.txt")
    with open(src, encoding="utf-8") as fh:
        head = "".join(next(fh) for _ in range(2001))
    cs = read_captions(head.encode(), name="head.txt")
    model = fit_keyword_model(cs, Mapping.default())
    a = analyze_text("Two dogs play in the snow by the mountains", model=model)
    assert a.categories[:2] and set(a.categories) >= {"glacier", "mountain"}
    assert set(a.keywords[:2]) == {"snow", "mountains"}
