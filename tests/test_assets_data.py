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


# --- the cache checks the files it built (issue 28) ---------------------------------------------------
# Each test damages a throw-away FTLAB_HOME, never the real cache, and ends in a rebuild or a clear AssetError.
import json, os, shutil
from ftlab import assets
from ftlab.assets import asset_dir, fetch_main, ftlab_home, load_encoder

_REAL_PACKAGES = ftlab_home() / "packages"


@pytest.fixture(scope="module")
def built_home(tmp_path_factory):
    "A throw-away FTLAB_HOME with the sentiment data and the encoder built from the verified packages."
    h = tmp_path_factory.mktemp("ftlab-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTLAB_HOME", str(h)); mp.setenv("FTLAB_PACKAGES", str(_REAL_PACKAGES))
        movie_train = len(load_data("sentiment/movie")["train"])
        asset_dir("encoder")
    return h, movie_train


@pytest.fixture
def home(built_home, monkeypatch):
    h, _ = built_home
    monkeypatch.setenv("FTLAB_HOME", str(h)); monkeypatch.setenv("FTLAB_PACKAGES", str(_REAL_PACKAGES))
    return h


def _truncate(p, frac=1/3): p.write_bytes(p.read_bytes()[:int(p.stat().st_size*frac)])


def _flip_keep_time(p, at=1_000_000):
    "Flip one bit in the middle of `p`, keeping its size and modification time: a silent disk error."
    st = p.stat()
    with open(p, "r+b") as f:
        f.seek(at); b = f.read(1); f.seek(at); f.write(bytes([b[0] ^ 1]))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_truncated_dataset_file_is_rebuilt(home, built_home, capsys):
    f = home / "sentiment" / "movieReviewSnippets_GroundTruth.txt"
    _truncate(f)
    assert len(load_data("sentiment/movie")["train"]) == built_home[1] > 7000    # not the 2,421 rows a third gives
    err = capsys.readouterr().err
    assert f"{f.name} is " in err and "expected 1,383,098 (truncated or changed)" in err and "rebuilding 'sentiment'" in err
    assert err.count("\n") == 1, err                                               # one line


def test_deleted_dataset_file_is_rebuilt(home, capsys):
    (home / "sentiment" / "tweets_GroundTruth.txt").unlink()
    assert len(load_data("sentiment/tweets")["test"]) > 500
    assert "tweets_GroundTruth.txt is missing" in capsys.readouterr().err


def test_truncated_tokenizer_json_is_rebuilt(home, capsys):
    _truncate(home / "encoder" / "tokenizer.json")
    m, tok = load_encoder()
    assert tok("a fine film")["input_ids"][:1] == [101] and m.config.hidden_size == 384
    assert "tokenizer.json is " in capsys.readouterr().err


def test_truncated_weights_are_rebuilt(home, capsys):
    _truncate(home / "encoder" / "model.safetensors", 0.5)
    m, _ = load_encoder()
    assert m.config.num_hidden_layers == 6
    assert "model.safetensors is 45,434,188 bytes, expected 90,868,376" in capsys.readouterr().err


def test_bit_flipped_weights_are_found_by_hash(home, capsys):
    w = home / "encoder" / "model.safetensors"
    good = json.loads((home / "encoder" / ".ftlab-asset.json").read_text())["files"]["model.safetensors"][2]
    _flip_keep_time(w)
    assert asset_dir("encoder") and assets._sha256(w) != good      # size and time kept: the cheap check cannot see it
    assert fetch_main(["--verify", "encoder"]) == 0                # --verify hashes every file and rebuilds
    assert assets._sha256(w) == good
    out = capsys.readouterr()
    assert "model.safetensors has sha256" in out.err and "rebuilding 'encoder'" in out.err and "verified" in out.out
    with open(w, "r+b") as f: f.seek(2_000_000); b = f.read(1); f.seek(2_000_000); f.write(bytes([b[0] ^ 1]))
    load_encoder()                                                 # a write moved the time: hashed on load, rebuilt
    assert assets._sha256(w) == good and "other content" in capsys.readouterr().err


def test_old_cache_is_trusted_once_and_recorded(home, capsys):
    "A marker from an older ftlab (no file record) is trusted on first load and recorded; --verify rebuilds it."
    mk, f = home / "sentiment" / ".ftlab-asset.json", home / "sentiment" / "movieReviewSnippets_GroundTruth.txt"
    old = {k: v for k, v in json.loads(mk.read_text()).items() if k != "files"}
    mk.write_text(json.dumps(old)); t = f.stat().st_mtime_ns
    asset_dir("sentiment")
    assert f.name in json.loads(mk.read_text())["files"]                      # recorded ...
    assert f.stat().st_mtime_ns == t and capsys.readouterr().err == ""        # ... not rebuilt, nothing said
    mk.write_text(json.dumps(old))
    assets.fetch("sentiment", verify=True)                                    # --verify rebuilds it
    assert "built by an older ftlab that recorded no file hashes" in capsys.readouterr().err
    assert f.name in json.loads(mk.read_text())["files"] and f.stat().st_mtime_ns != t


def test_damaged_asset_without_its_package_is_a_clear_error(home, tmp_path, monkeypatch):
    h = tmp_path / "home"; shutil.copytree(home / "sentiment", h / "sentiment")       # built, but no package at hand
    monkeypatch.setenv("FTLAB_HOME", str(h)); monkeypatch.setenv("FTLAB_PACKAGES", str(tmp_path))

    def offline(pkg, dest): raise AssetError(f"Could not download {pkg.spec} with pip (offline).")
    monkeypatch.setattr(assets, "_pip_download", offline)
    _truncate(h / "sentiment" / "nytEditorialSnippets_GroundTruth.txt")
    with pytest.raises(AssetError) as e: load_data("sentiment/editorial")
    msg = str(e.value)
    assert "nytEditorialSnippets_GroundTruth.txt is " in msg and "expected 607,629" in msg
    assert "Could not download vaderSentiment==3.3.2" in msg
    assert "ftlab fetch --verify sentiment" in msg and f"delete {h / 'sentiment'}" in msg


def test_ftlab_home_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch):
    f = tmp_path / "not-a-folder"; f.write_text("x")
    monkeypatch.setenv("FTLAB_HOME", str(f))
    for load in (lambda: load_data("sentiment/movie"), load_encoder, lambda: fetch_main(["bbc_news"])):
        with pytest.raises(AssetError, match="FTLAB_HOME=.*not-a-folder' is a file, not a folder. Set FTLAB_HOME to a folder"):
            load()
