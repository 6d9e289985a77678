"Data honesty of the bundled datasets: no text in two splits, Rotten Tomatoes split by movie, cleaning and balance reported."
import numpy as np
import pandas as pd
import pytest

from ftlab.assets import (ASSETS, AssetError, SENTIMENT_DOMAINS, dataset_names, dedup_key, deduplicate, load_data,
                          load_rotten_tomatoes, rotten_tomatoes_frame, sentiment_frame, split_overlap, stratified_split)


def _keys(split) -> set: return set(map(dedup_key, split["text"]))


@pytest.mark.parametrize("name", dataset_names())
def test_no_text_in_two_splits(name):
    dd = load_data(name)
    names = list(dd)
    for i, a in enumerate(names):
        for b in names[i+1:]:
            assert not _keys(dd[a]) & _keys(dd[b]), f"{name}: {a} and {b} share texts"
    assert split_overlap(dd) == 0
    assert all("" not in _keys(v) for v in dd.values()), f"{name}: a text without letters or digits survived"


@pytest.mark.parametrize("domain", list(SENTIMENT_DOMAINS))
def test_sentiment_cleaning_is_counted_and_reported(domain):
    df, dd = sentiment_frame(domain), load_data(f"sentiment/{domain}")
    c = df.attrs["cleaning"]
    assert df.text.map(dedup_key).is_unique
    assert c["rows"] - c["neutral"] - c["no_text"] - c["duplicate_rows"] - c["conflicting_rows"] == c["kept"] == len(df)
    assert sum(len(v) for v in dd.values()) == c["kept"]
    desc = dd["test"].info.description
    assert f"{c['duplicate_groups']:,} texts repeated" in desc
    assert f"{c['conflicting_groups']:,} repeated with conflicting labels" in desc
    assert "Class shares in train/validation/test: negative" in desc


def test_known_duplicates_are_found():
    "The raw files repeat snippets: tweets and editorials have groups with both labels, which are dropped whole."
    tw, ed = sentiment_frame("tweets").attrs["cleaning"], sentiment_frame("editorial").attrs["cleaning"]
    assert tw["duplicate_groups"] > 10 and tw["conflicting_groups"] >= 1
    assert ed["duplicate_groups"] > 10 and ed["conflicting_groups"] >= 1


def test_deduplicate_drops_conflicts_and_keeps_first():
    df = pd.DataFrame(dict(text=["Good!", "good", "Bad", "BAD.", "ok", "?"], label=[1, 1, 0, 1, 1, 0], i=range(6)))
    out = deduplicate(df)
    assert out.i.tolist() == [0, 4]
    assert out.attrs["cleaning"] == dict(no_text=1, duplicate_groups=2, duplicate_rows=1, conflicting_groups=1,
                                         conflicting_rows=2, kept=2)


@pytest.mark.parametrize("kw", [dict(), dict(balanced=True), dict(dedup_against_movie=False), dict(seed=3)])
def test_rotten_tomatoes_grouped_by_movie(kw):
    dd = load_rotten_tomatoes(**kw)
    movies = {k: set(v["movie"]) for k, v in dd.items()}
    assert not movies["train"] & movies["test"]
    assert not movies["train"] & movies["validation"]
    assert not movies["validation"] & movies["test"]


def test_rotten_tomatoes_balance_is_stated_and_stratified():
    dd = load_rotten_tomatoes()
    shares = {k: float(np.mean(v["label"])) for k, v in dd.items()}
    desc = dd["train"].info.description
    stated = "fresh " + "/".join(f"{100*s:.1f}" for s in shares.values()) + "%"
    assert stated in desc, (stated, desc)
    assert "grouped by movie" in desc
    assert max(shares.values()) - min(shares.values()) < 0.05        # stratified: test looks like train
    bal = load_rotten_tomatoes(balanced=True)
    assert all(np.mean(v["label"]) == 0.5 for v in bal.values())
    assert "fresh 50.0/50.0/50.0%" in bal["test"].info.description


def test_rotten_tomatoes_excludes_the_movie_domain():
    movie = set(sentiment_frame("movie").text.map(dedup_key))
    df = rotten_tomatoes_frame()
    assert not set(df.text.map(dedup_key)) & movie
    assert df.attrs["cleaning"]["in_movie_domain"] > 0.9*len(movie)


def test_grouped_split_is_reproducible_and_seeded():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(dict(label=rng.integers(0, 2, 500), g=rng.integers(0, 80, 500), i=range(500)))
    a, b, c = (stratified_split(df, group="g", seed=s) for s in (0, 0, 1))
    assert all(a[k].i.tolist() == b[k].i.tolist() for k in a)
    assert any(a[k].i.tolist() != c[k].i.tolist() for k in a)
    assert sorted(pd.concat(a.values()).i) == list(range(500))


def test_load_data_comes_from_the_registry():
    assert {n.split("/")[0] for n in dataset_names()} == {n for n, a in ASSETS.items() if a.kind == "dataset"}
    with pytest.raises(AssetError, match="It is a model"): load_data("causal_lm")
    with pytest.raises(AssetError, match="Unknown dataset 'imdb'"): load_data("imdb")
