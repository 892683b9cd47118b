"""Every ranking mode on a small real subset, the why strings, bad queries, image search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.search import MODES, SearchEngine
from core.search.evaluate import whole_table
from core.search.query import EXAMPLES
from tests.helpers import build_small, flickr_subset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(intel_small: Path, tmp_path_factory: pytest.TempPathFactory) -> SearchEngine:
    tmp = tmp_path_factory.mktemp("search_modes")
    index = build_small(intel_small, flickr_subset(tmp / "flickr"), tmp / "idx")
    return SearchEngine.load(index)


def test_engine_uses_the_category_head_and_mapping(engine: SearchEngine) -> None:
    assert engine.classes == ["buildings", "forest", "glacier", "mountain", "sea", "street"]
    assert "category head" in engine.category_source
    cfg = engine.semantic.config
    assert cfg["train_labelled_images"] == 120  # the 20 training images per class
    assert 0 < len(cfg["heldout_images"]) < 16  # some photos kept out for evaluation
    # no split lists beside the captions: a fixed hash share, 7 of these 16 photos
    assert len(cfg["heldout_images"]) == 7
    assert cfg["train_captioned_images"] + len(cfg["heldout_images"]) == 16
    # saved like a run, and found again instead of refitted
    assert (engine.semantic.path / "config.json").exists()
    again = SearchEngine.load(engine.index_dir, text=engine.text)
    assert again.semantic.path == engine.semantic.path
    np.testing.assert_array_equal(again.semantic.weights, engine.semantic.weights)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_ranks_forest_first_for_a_forest_query(engine: SearchEngine, mode) -> None:
    resp = engine.search("Tall trees in a dense green forest.", mode=mode, k=5, split="test")
    assert resp.results, resp.notes
    assert [r.rank for r in resp.results] == list(range(1, len(resp.results) + 1))
    scores = [r.score for r in resp.results]
    assert scores == sorted(scores, reverse=True)
    labels = [r.label for r in resp.results]
    assert labels.count("forest") >= 4, (mode, labels)  # measured on real images
    assert all(r.why for r in resp.results)
    assert "forest" in resp.keywords and resp.categories == ["forest"]


def test_why_strings_say_which_words_matched_what(engine: SearchEngine) -> None:
    kw = engine.search("forest", mode="keyword", k=3).results[0]
    assert kw.why[0].startswith("query → forest (mapping-table word 'forest'); P(forest) = ")
    cat = engine.search("A sandy beach", mode="category", k=3).results[0]
    assert cat.why[0].startswith("query → sea (mapping-table word 'beach'); P(sea) = ")
    sem = engine.search("snow and ice", mode="semantic", k=3).results[0]
    assert any(w.startswith("learned image embedding ~ query: ") for w in sem.why)
    assert any(w.startswith("'snow' ~ tag ") for w in sem.why)
    hyb = engine.search("forest", mode="hybrid", k=3).results[0]
    # the parts the fusion weighs (keyword weighs 0: chosen on validation) say why
    assert {w.split(":")[0] for w in hyb.why} == {"category", "semantic"}


def test_keyword_mode_matches_whole_labels_not_words_inside_them(engine: SearchEngine) -> None:
    # issue 20: "beach" matched inside "beach wagon" and "night" inside "night snake"; a word
    # now matches a label only as the whole label or its head noun, and a category only
    # through the mapping table (predicted category) or the groups table.
    for text in ("waves on a beach", "sea", "a busy city street at night"):
        resp = engine.search(text, mode="keyword", k=30)
        assert resp.results, text
        for r in resp.results:
            assert r.why and all("wagon" not in w and "snake" not in w for w in r.why), r.why
            assert all(
                w.startswith("query → ")
                or "= ImageNet label" in w
                or "= head noun" in w
                or " in caption " in w
                for w in r.why
            ), r.why
    sea = engine.search("waves on a beach", mode="keyword", k=10, split="test")
    assert [r.label for r in sea.results].count("sea") >= 7, [r.label for r in sea.results]


def test_category_filter_and_examples(engine: SearchEngine) -> None:
    resp = engine.search(EXAMPLES[2], mode="semantic", k=5, category="sea")
    assert resp.results and all(r.category == "sea" for r in resp.results)
    with pytest.raises(ValueError, match="unknown category"):
        engine.search("x", category="desert")
    with pytest.raises(ValueError, match="unknown mode"):
        engine.search("x", mode="magic")
    for text in EXAMPLES:  # the study's sentences all give an answer
        resp = engine.search(text, mode="hybrid", k=3)
        assert resp.results or resp.notes


@pytest.mark.parametrize("mode", MODES)
def test_bad_queries_give_a_clear_answer(engine: SearchEngine, mode) -> None:
    empty = engine.search("   ", mode=mode)
    assert empty.results == [] and "Empty query" in empty.notes[0]
    long = engine.search("forest " * 400, mode=mode, k=3)
    assert any("Long query" in n for n in long.notes) and long.results
    foreign = engine.search("Una playa llena de turistas y sombrillas", mode=mode, k=3)
    assert any("does not look like English" in n for n in foreign.notes)
    stop = engine.search("the and of it", mode=mode, k=3)
    assert any("No content words" in n for n in stop.notes)
    assert stop.nearest_categories and len(stop.nearest_categories) == 3


def test_nothing_matched_lists_the_nearest_categories(engine: SearchEngine) -> None:
    # no mapping-table word: the keyword mode, like the category mode, says it ranked by the
    # nearest category by meaning, and every why names that category
    resp = engine.search("The desert is vast and dry.", mode="keyword")
    assert resp.results and "nearest category by meaning" in resp.notes[-1]
    assert all(r.why[0].startswith("no mapping-table word; nearest category") for r in resp.results)
    cat = engine.search("The desert is vast and dry.", mode="category", k=3)
    assert cat.results and "nearest category by meaning" in cat.notes[-1]


def test_image_similarity_and_upload(engine: SearchEngine) -> None:
    from core.data.images import load_rgb

    whole = whole_table(engine)
    src = next(i for i, lab in enumerate(whole.labels) if lab == "forest")
    more = engine.similar(path=whole.paths[src], k=5)
    assert whole.paths[src] not in [r.path for r in more.results]
    assert more.results[0].why[0].startswith("backbone feature cosine")
    assert [r.label for r in more.results].count("forest") >= 3
    info = engine.classify_image(load_rgb(whole.paths[src]))
    assert info["categories"][0][0] == whole.pred[src]
    assert len(info["top_labels"]) == 5
    up = engine.similar(feature=info["feature"], k=1, exclude_self=False)
    assert up.results[0].path == whole.paths[src]  # the same picture is its own best match
    assert up.results[0].score == pytest.approx(1.0, abs=1e-3)


def test_a_damaged_table_is_one_clean_error_for_every_kind_of_query(
    engine: SearchEngine, tmp_path: Path
) -> None:
    """Text, image and image+text queries take the one guarded path: overwritten data files
    are one SearchIndexError naming the index, never a Lance error (image+text used to skip
    the guard)."""
    import os
    import shutil

    from core.data.images import load_rgb
    from core.search.store import SearchIndexError

    info = engine.classify_image(load_rgb(whole_table(engine).paths[0]))
    copy = shutil.copytree(engine.index_dir, tmp_path / "idx")
    damaged = SearchEngine.load(copy, text=engine.text)
    data = list((copy / "images.lance" / "data").glob("*.lance"))
    assert data
    for f in data:
        f.write_bytes(os.urandom(100))
    queries = {
        "text": lambda: damaged.search("snow and ice", mode="semantic", k=5),
        "image": lambda: damaged.similar(feature=info["feature"], k=5),
        "image+text": lambda: damaged.search_image_text(info, "at sunset", k=5),
    }
    for kind, ask in queries.items():
        with pytest.raises(SearchIndexError, match="the index table is damaged") as err:
            ask()
        assert str(copy) in str(err.value), kind


def test_no_good_match_is_never_said_above_right_results(engine: SearchEngine) -> None:
    # issue 20: "a busy city street at night" had night streets on top and "No good match";
    # the floor is now calibrated on typed sentences. Every sentence of both query sets whose
    # top 10 (test images) are at least 80% its category must clear the floor.
    from core.resources import queries_csv, resource_path
    from core.search.evaluate import read_queries

    rows = read_queries(queries_csv()) + read_queries(resource_path("validation_queries.csv"))
    checked = 0
    for text, cat in rows:
        for mode in ("semantic", "hybrid"):
            resp = engine.search(text, mode=mode, k=8, split="test")
            if [r.label for r in resp.results].count(cat) >= 0.8 * len(resp.results):
                checked += 1
                assert not resp.no_good_match, (text, mode, resp.floor)
    assert checked >= 40  # most sentences do find their category on these images


def test_hybrid_shows_scores_on_the_floors_scale(engine: SearchEngine) -> None:
    resp = engine.search("a busy city street at night", mode="hybrid", k=5)
    assert resp.floor is not None and resp.results
    sem = {r.path: r.score for r in engine.search(resp.query, mode="semantic", k=50).results}
    for r in resp.results:
        assert r.floor_score is not None and r.below_floor == (r.floor_score < resp.floor)
        if r.path in sem:  # the same semantic cosine the semantic mode scores
            assert r.floor_score == pytest.approx(sem[r.path], abs=1e-3)


def test_evaluation_counts_queries_without_a_content_word(
    engine: SearchEngine, tmp_path: Path
) -> None:
    from core.search.evaluate import describe_evaluation, evaluate_queries

    f = tmp_path / "q.csv"
    f.write_text("query,category\nthe and of it,forest\nTall trees in a dense forest.,forest\n")
    out = evaluate_queries(engine, f, ["keyword", "semantic"])
    assert out["n_queries"] == 2 and out["no_content_queries"] == 1
    assert "1 of them had no content word" in describe_evaluation(out)


@pytest.fixture(scope="module")
def validation_figures(engine: SearchEngine) -> tuple[dict, dict]:
    """P@10 per mode on the validation file's category sentences (pool: the test images) and
    R@10 per mode on the held-out photos' captions (pool: every image)."""
    from core.resources import resource_path
    from core.search.evaluate import evaluate_captions, evaluate_queries

    modes = ["keyword", "category", "semantic", "hybrid"]
    cat = evaluate_queries(engine, resource_path("validation_queries.csv"), modes)["modes"]
    cap = evaluate_captions(engine, None, modes)["modes"]
    return {m: cat[m]["P@10"] for m in modes}, {m: cap[m]["R@10"] for m in modes}


def test_hybrid_adds_the_category_to_meaning(validation_figures: tuple[dict, dict]) -> None:
    # the category part earns its place: on category sentences the hybrid ranks better than
    # meaning alone (measured: 0.707 against 0.703), and captions still find their photo
    p10, r10 = validation_figures
    assert p10["hybrid"] > p10["semantic"], p10
    assert r10["hybrid"] > 0.6 and r10["category"] == 0.0, r10


@pytest.mark.xfail(
    strict=True,
    reason="issue 20's bar is not met on this small index: the weights chosen on validation "
    "give P@10 0.707 against category's 0.750 on its 30 sentences; on 3,505 validation "
    "captions and 90 sentences no fusion of these parts reaches both in most resamples "
    "(README, 'Search answers'); this test passes (and must lose this mark) once it does",
)
def test_hybrid_never_loses_to_its_best_part(validation_figures: tuple[dict, dict]) -> None:
    # issue 20's bar, on a small validation-like set: the hybrid at or above the best single
    # mode on both category P@10 and caption R@10
    p10, r10 = validation_figures
    assert p10["hybrid"] >= max(p10.values()), p10
    assert r10["hybrid"] >= max(r10.values()), r10


def test_hybrid_weighs_the_category_fully_only_for_a_query_about_one(
    engine: SearchEngine,
) -> None:
    hybrid = engine.hybrid_retriever
    about = engine.analyze("snowy mountain peaks")
    caption = engine.analyze("A black dog runs across the grass with a ball in its mouth.")
    assert hybrid.about_category(about) and not hybrid.about_category(caption)
    assert hybrid.part_weights(about)["category"] == hybrid.weights["category"]
    assert 0 < hybrid.part_weights(caption)["category"] == hybrid.prior < 0.1
