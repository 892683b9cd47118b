"""Preprocessing, mapping table, TF-IDF, chi-square and PMI on hand-checkable corpora."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from core.text.categories import Mapping, MappingError, plural_forms, resolve_mapping_path
from core.text.chi2 import rank_chi2
from core.text.pmi import bigram_pmi, word_category_pmi
from core.text.preprocess import Preprocessor
from core.text.tfidf import fit_tfidf, top_k_per_row
from tests.helpers import require_shared

# Six captions; the table says snow -> glacier, mountain -> mountain.
CORPUS = [
    ["snow", "mountain"],
    ["dog", "snow"],
    ["snow", "falls"],
    ["dog", "runs"],
    ["cat", "sleeps"],
    ["dog", "barks"],
]
SMALL = Mapping({"glacier": ["snow"], "mountain": ["mountain"]})


def test_preprocess_without_nltk_data() -> None:
    prep = Preprocessor.default()
    assert prep.tokens("A dog's run, on the BEACH!! (2 dogs)") == ["dog", "run", "beach", "dogs"]
    assert prep.words("It's 5 o'clock.") == ["it", "s", "o", "clock"]
    assert "stop words:" in prep.describe()
    if prep.stopword_source == "sklearn":
        assert "NLTK stop-word data not installed" in prep.describe()
    forced = Preprocessor.default(use_nltk=False)
    assert forced.stopword_source == "sklearn" and forced.lemmatizer_name == "none"


def test_plural_forms() -> None:
    assert plural_forms("tree") == {"tree", "trees"}
    assert plural_forms("trees") == {"trees", "tree"}
    assert plural_forms("bus") == {"bus", "buses"}
    assert plural_forms("beach") == {"beach", "beaches"}
    assert plural_forms("city") == {"city", "cities"}
    assert plural_forms("alley") == {"alley", "alleys"}
    assert "glas" not in plural_forms("glass")


def test_mapping_inflection_and_multi_label() -> None:
    m = Mapping.default()
    # The categories are the data set's classes (the Intel folder names).
    classes = sorted(p.name for p in require_shared("intel", "seg_train").iterdir() if p.is_dir())
    assert m.names == classes == ["buildings", "forest", "glacier", "mountain", "sea", "street"]
    assert m.categories_of(["tree"]) == ["forest"]  # table says "trees"
    assert m.categories_of(["mountains"]) == ["mountain"]
    assert m.categories_of(["churches"]) == ["buildings"]
    assert m.categories_of(["beaches", "houses"]) == ["buildings", "sea"]
    assert m.categories_of(["wood"]) == []  # "woods" is exact: "a wood floor" is no forest
    assert m.categories_of(["woods"]) == ["forest"]
    assert m.categories_of(["river", "streams"]) == []  # no class is a river
    y = m.label_matrix([["house", "beach"], ["dog"], ["roads"]])
    assert y.tolist() == [[1, 0, 0, 0, 1, 0], [0] * 6, [0, 0, 0, 0, 0, 1]]


def test_mapping_save_load_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = Mapping.default().with_words({"sea": ["waves", "sea"], "desert": ["dune"]})
    assert m.categories["sea"][-1] == "waves" and m.categories["sea"].count("sea") == 1
    path = m.save(tmp_path / "m.json")
    back = Mapping.load(path)
    assert back.categories == m.categories and back.exact == {"woods"}
    assert back.categories_of(["wave"]) == ["sea"]
    with pytest.raises(MappingError, match="both"):
        Mapping.from_dict({"categories": {"a": ["x"], "b": ["x"]}})
    with pytest.raises(MappingError, match="single lower-case"):
        Mapping.from_dict({"categories": {"a": ["two words"]}})
    with pytest.raises(MappingError, match="not valid JSON"):
        Mapping.from_json("{nope")
    with pytest.raises(MappingError, match="no words"):
        Mapping.from_dict({"categories": {"a": []}})
    # Resolution: $SCENESEEK_MAPPING wins over the saved and packaged tables.
    monkeypatch.setenv("SCENESEEK_MAPPING", str(path))
    assert resolve_mapping_path() == path
    assert "desert" in Mapping.load().categories
    assert json.loads(path.read_text())["exact"] == ["woods"]


def test_chi2_by_hand() -> None:
    y = SMALL.label_matrix(CORPUS)
    res = rank_chi2(CORPUS, y, SMALL.names, set(SMALL.forms()), min_df=1)
    col = {w: i for i, w in enumerate(res.vocabulary)}
    g = SMALL.names.index("glacier")
    # "falls" and glacier: A=1, B=0, C=2, D=3, N=6 -> 6*(1*3-0*2)^2 / (1*5*3*3) = 54/45 = 1.2
    assert res.chi2[col["falls"], g] == pytest.approx(1.2)
    expected = chi2_contingency([[1, 0], [2, 3]], correction=False)[0]
    assert res.chi2[col["falls"], g] == pytest.approx(expected)
    # "snow" defines glacier: perfect association -> chi2 = N = 6.
    assert res.chi2[col["snow"], g] == pytest.approx(6.0)
    # "dog": A=1, B=2, C=2, D=1 -> negative association, not ranked (its chi2 would be 2/3).
    assert res.chi2[col["dog"], g] == 0.0
    assert chi2_contingency([[1, 2], [2, 1]], correction=False)[0] == pytest.approx(2 / 3)
    top = res.top_per_category["glacier"]
    assert [r["word"] for r in top[:2]] == ["snow", "falls"]
    assert top[0]["in_mapping"] and not top[1]["in_mapping"]
    assert res.top_overall[0]["chi2"] == pytest.approx(6.0)


def test_pmi_by_hand() -> None:
    docs = [["a", "b"], ["a", "b"], ["a", "c"], ["d", "b"]]
    [ab] = bigram_pmi(docs, min_freq=2)
    # N = 8 tokens, n_a = 3, n_b = 3, n_ab = 2: PMI = log2(2*8/9); NPMI = PMI / -log2(2/8).
    assert (ab.w1, ab.w2, ab.count) == ("a", "b", 2)
    assert ab.pmi == pytest.approx(math.log2(16 / 9))
    assert ab.npmi == pytest.approx(math.log2(16 / 9) / 2)
    from nltk.collocations import BigramAssocMeasures, BigramCollocationFinder

    f = BigramCollocationFinder.from_documents(docs)
    f.apply_freq_filter(2)
    assert f.score_ngrams(BigramAssocMeasures.pmi)[0][1] == pytest.approx(ab.pmi)
    # The floor drops pairs seen once; no pair spans two captions ("b a" never counted).
    assert bigram_pmi(docs, min_freq=3) == []
    assert all((b.w1, b.w2) != ("b", "a") for b in bigram_pmi(docs, min_freq=1))


def test_word_category_pmi_by_hand() -> None:
    y = SMALL.label_matrix(CORPUS)
    res = rank_chi2(CORPUS, y, SMALL.names, min_df=1)
    wc = word_category_pmi(res.joint, res.doc_freq, y, min_joint=1)
    col = {w: i for i, w in enumerate(res.vocabulary)}
    g = SMALL.names.index("glacier")
    # snow: in 3 of 6 captions, all 3 glacier captions -> log2(3*6 / (3*3)) = 1 bit.
    assert wc[col["snow"], g] == pytest.approx(1.0)
    # dog & glacier: 1 joint of 3 and 3 -> log2(1*6/9)
    assert wc[col["dog"], g] == pytest.approx(math.log2(6 / 9))
    assert np.isnan(wc[col["cat"], g])  # never together


def test_tfidf_ranking() -> None:
    res = fit_tfidf(CORPUS, top=3)
    idf = res.idf()
    # scikit-learn's smooth idf: ln((1+n)/(1+df)) + 1
    assert idf["dog"] == pytest.approx(math.log(7 / 4) + 1)
    assert idf["cat"] == pytest.approx(math.log(7 / 2) + 1)
    top1 = top_k_per_row(res.matrix, res.vocabulary, 1)
    assert top1[1] == ["dog"]  # dog and snow tie; broken by column (alphabetical) order
    assert top1[2] == ["falls"]  # rarer than snow
    assert len(res.top) == 3 and res.top[0][1] >= res.top[-1][1]
