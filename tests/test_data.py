"""Tests for jaxscale.data and jaxscale.downloads: real corpora, tiny, offline."""

from __future__ import annotations

import io
import lzma
import os
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tiktoken

from jaxscale import data, downloads, synthetic
from jaxscale.data import DataError, batch_dataset, eval_batches, get_tokenizer, load_corpus

SMALL_SYNTHETIC = "synthetic:tokens=400000,doc=2048"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Never touch a real network from tests, whether or not one exists.
    monkeypatch.setattr(downloads, "reachable", lambda url, timeout=3.0: False)


# --- tokenizers -------------------------------------------------------------------------------


def test_bytes_tokenizer_round_trips() -> None:
    enc = get_tokenizer("bytes")
    text = "def f(x):\n    return x  # ünïcode ✓\n"
    assert enc.n_vocab == 256
    assert enc.encode(text) == list(text.encode())
    assert enc.decode(enc.encode(text)) == text


def test_unknown_tokenizer_names_the_choices() -> None:
    with pytest.raises(DataError, match="bytes, gpt2"):
        get_tokenizer("sentencepiece")


def test_gpt2_offline_and_uncached_fails_fast(tmp_path, monkeypatch, offline) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(DataError, match="TIKTOKEN_CACHE_DIR") as err:
        get_tokenizer("gpt2")
    assert time.monotonic() - start < 5
    assert "\n" not in str(err.value) and "vocab.bpe" in str(err.value)


def test_reachable_probe_is_bounded() -> None:
    with loopback_server() as port:
        assert downloads.reachable(f"http://127.0.0.1:{port}/", timeout=2)
    start = time.monotonic()
    assert not downloads.reachable(f"http://127.0.0.1:{port}/", timeout=1)  # now closed
    assert time.monotonic() - start < 2


def test_reachable_gives_up_on_a_hung_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    # DNS lookups ignore socket timeouts; the probe must still return on time.
    def hang(*args: object, **kwargs: object) -> None:
        time.sleep(1.5)
        raise OSError("lookup timed out")

    monkeypatch.setattr(downloads.socket, "create_connection", hang)
    start = time.monotonic()
    assert not downloads.reachable("https://huggingface.co/", timeout=0.2)
    assert time.monotonic() - start < 1


# --- corpora ----------------------------------------------------------------------------------


def _documents(tokens: np.ndarray) -> set[bytes]:
    return {bytes(d) for d in tokens.astype(np.uint8).tobytes().split(b"\0") if d}


def test_stdlib_is_deterministic_cached_and_split(cache: Path) -> None:
    first = load_corpus("stdlib", cache_dir=cache, progress=False)
    files = sorted((cache / "tokens").glob(f"{first.fingerprint}.*"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    second = load_corpus("stdlib", cache_dir=cache, progress=False)
    assert second.fingerprint == first.fingerprint
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # a cache hit rewrites nothing
    assert len(files) == 3 and not list((cache / "tokens").glob("*tmp*"))
    assert np.array_equal(first.val, second.val)
    assert first.train.dtype == np.uint16 and first.n_vocab == 256
    assert first.bytes_per_token == 1.0 and first.entropy is None
    assert len(first.val) > 300_000 and len(first.train) > 10 * len(first.val)
    assert first.unique_train_tokens == len(first.train)
    assert first.n_docs > 100
    train_docs, val_docs = _documents(first.train), _documents(first.val)
    assert val_docs and not train_docs & val_docs


def test_synthetic_entropy_matches_counts(cache: Path) -> None:
    corpus = load_corpus(SMALL_SYNTHETIC, cache_dir=cache, progress=False)
    spec = synthetic.Synthetic.parse(SMALL_SYNTHETIC.partition(":")[2])
    assert corpus.entropy == pytest.approx(spec.entropy_rate())
    # symbol index of every token, then bigram counts over the training stream
    index = np.full(256, -1)
    index[synthetic._SYMBOLS[: spec.symbols]] = np.arange(spec.symbols)
    x_tokens = np.array(corpus.train)
    x = index[x_tokens]
    assert (x >= 0).all()
    counts = np.zeros((spec.symbols, spec.symbols))
    np.add.at(counts, (x[:-1], x[1:]), 1)
    empirical = counts / counts.sum(axis=1, keepdims=True)
    P = spec.transitions()
    assert np.abs(empirical - P).max() < 0.03
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(counts * np.log(empirical)) / counts.sum()
    assert h == pytest.approx(corpus.entropy, rel=0.01)
    # stationary from the first token: symbol frequencies match pi
    assert np.abs(np.bincount(x, minlength=spec.symbols) / len(x) - spec.stationary()).max() < 0.01
    again = load_corpus(SMALL_SYNTHETIC, cache_dir=cache, progress=False)
    assert again.fingerprint == corpus.fingerprint
    # a damaged cache (a crash outside the atomic writes) is detected and rebuilt
    with open(cache / "tokens" / f"{corpus.fingerprint}.train.bin", "r+b") as f:
        f.truncate(1000)
    rebuilt = load_corpus(SMALL_SYNTHETIC, cache_dir=cache, progress=False)
    assert np.array_equal(rebuilt.train, np.asarray(x_tokens))


def test_synthetic_is_deterministic_and_order_two_is_exact() -> None:
    spec = synthetic.Synthetic.parse("order=2,symbols=6,doc=64,seed=3")
    assert np.array_equal(spec.sample(4, 1, 0), spec.sample(4, 1, 0))
    assert not np.array_equal(spec.sample(4, 1, 0), spec.sample(4, 2, 0))
    pi, P = spec.stationary(), spec.transitions()
    # pi is stationary for the chain over (previous, current) pairs
    nxt = np.zeros_like(pi)
    for s in range(36):
        for x in range(6):
            nxt[(s * 6 + x) % 36] += pi[s] * P[s, x]
    assert np.allclose(nxt, pi) and pi.sum() == pytest.approx(1)
    assert 0 < spec.entropy_rate() < np.log(6)


@pytest.mark.parametrize("bad", ["synthetic:order=9", "synthetic:colour=3", "synthetic:seed=x"])
def test_synthetic_bad_options(bad: str, cache: Path) -> None:
    with pytest.raises(DataError, match="synthetic"):
        load_corpus(bad, cache_dir=cache)


def test_text_folder_and_file(tmp_path: Path, cache: Path) -> None:
    folder = tmp_path / "notes"
    for i in range(60):
        (folder / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (folder / f"d{i % 3}" / f"{i}.txt").write_text(f"note {i}: " + "lorem ipsum " * (i + 1))
    corpus = load_corpus(f"text:{folder}", cache_dir=cache, progress=False)
    train_docs, val_docs = _documents(corpus.train), _documents(corpus.val)
    assert len(train_docs) + len(val_docs) == 60 == corpus.n_docs
    assert val_docs and not train_docs & val_docs
    single = tmp_path / "book.txt"
    single.write_text("".join(f"line {i} of the book\n" for i in range(5000)))
    book = load_corpus(f"text:{single}", cache_dir=cache, progress=False)
    assert len(book.train) + len(book.val) == single.stat().st_size + book.n_docs
    assert book.n_docs > 100 and len(book.val) > 0


def test_missing_path_and_unknown_spec(cache: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_corpus("text:/no/such/place", cache_dir=cache)
    with pytest.raises(DataError, match="stdlib, synthetic"):
        load_corpus("wikipedia", cache_dir=cache)


def test_a_bpe_tokenizer_with_end_of_text(tmp_path: Path, cache: Path, monkeypatch) -> None:
    # A tiny stand-in for gpt2 (which needs a download): merges plus an <|endoftext|> token.
    ranks = {bytes([i]): i for i in range(256)} | {b" t": 256, b"he": 257, b" the": 258}
    tiny = tiktoken.Encoding(
        "tiny",
        pat_str=r" ?\w+|\s+|[^\w\s]+",
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 259},
    )
    monkeypatch.setattr(data, "get_tokenizer", lambda name: tiny)
    (tmp_path / "a.txt").write_text("over the hill")
    (tmp_path / "b.txt").write_text("and the other")
    corpus = load_corpus(f"text:{tmp_path}", "gpt2", cache_dir=cache, progress=False)
    assert corpus.n_vocab == 260 and corpus.entropy is None
    text = tiny.decode(np.concatenate([corpus.train, corpus.val]).tolist())
    assert sorted(text.split("<|endoftext|>")) == ["", "and the other", "over the hill"]
    assert corpus.bytes_per_token > 1  # " the" is one token


def test_downloads_offline_fail_fast(tmp_path: Path, offline) -> None:
    for spec, name in (("tinystories", "TinyStories"), ("openwebtext:2", "OpenWebText")):
        start = time.monotonic()
        with pytest.raises(DataError, match=f"cannot reach huggingface.co to download {name}"):
            load_corpus(spec, cache_dir=tmp_path, progress=False)
        assert time.monotonic() - start < 5
    with pytest.raises(DataError, match="openwebtext:N"):
        load_corpus("openwebtext:99", cache_dir=tmp_path)


def test_tinystories_from_placed_files(tmp_path: Path, offline) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    for split, url in downloads.TINYSTORIES.items():
        stories = [f"{split} story {i}. The end." for i in range(20)]
        (folder / url.rsplit("/", 1)[1]).write_text("<|endoftext|>\n".join(stories))
    corpus = load_corpus("tinystories", cache_dir=tmp_path, progress=False)
    assert corpus.n_docs == 40
    assert _documents(corpus.val) == {f"val story {i}. The end.".encode() for i in range(20)}


def test_iter_openwebtext_reads_nested_xz_tars(tmp_path: Path) -> None:
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as tar:
        for i in range(3):
            body = f"document {i}".encode()
            info = tarfile.TarInfo(f"{i}.txt")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    xz = lzma.compress(inner.getvalue())
    with tarfile.open(tmp_path / "subset.tar", mode="w") as outer:
        info = tarfile.TarInfo("urlsf_subset00-1_data.xz")
        info.size = len(xz)
        outer.addfile(info, io.BytesIO(xz))
    docs = list(downloads.iter_openwebtext(tmp_path / "subset.tar"))
    assert docs == [(f"{i}.txt", f"document {i}".encode()) for i in range(3)]


# --- batches ----------------------------------------------------------------------------------


def test_batch_dataset_is_a_pure_function_of_seed_and_index() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    make = lambda seed: batch_dataset(  # noqa: E731
        tokens, batch_size=4, context=32, seed=seed, num_batches=20
    )
    a, b = make(0), make(0)
    assert len(a) == 20
    assert a[7].shape == (4, 33) and a[7].dtype == np.int32
    assert np.array_equal(a[7], b[7]) and not np.array_equal(a[7], make(1)[7])
    assert (np.diff(a[7], axis=1) == 1).all()  # contiguous windows
    resumed = [np.asarray(x) for x in a[12:]]
    assert all(np.array_equal(x, a[12 + i]) for i, x in enumerate(resumed))
    it = iter(a.to_iter_dataset())
    for _ in range(5):
        next(it)
    state = it.get_state()
    fresh = iter(b.to_iter_dataset())
    fresh.set_state(state)
    assert np.array_equal(next(fresh), a[5])


def test_eval_batches_are_deterministic_and_disjoint() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    batches = list(eval_batches(tokens, batch_size=3, context=50, max_tokens=400))
    again = list(eval_batches(tokens, batch_size=3, context=50, max_tokens=400))
    assert [b.shape for b in batches] == [(3, 51), (3, 51), (2, 51)]
    assert all(np.array_equal(x, y) for x, y in zip(batches, again, strict=True))
    windows = np.concatenate(batches)
    targets = windows[:, 1:].ravel()
    assert len(set(targets.tolist())) == len(targets) == 400 and windows[0, 0] == 0
    with pytest.raises(DataError, match="context"):
        eval_batches(tokens[:10], batch_size=2, context=50, max_tokens=100)


# --- resumable download against a loopback server ---------------------------------------------

PAYLOAD = bytes(range(256)) * 400  # 100 KiB


class _Handler(BaseHTTPRequestHandler):
    cut_next = False  # send only half the body, then drop the connection
    honour_range = True
    ranges: list[str | None] = []  # noqa: RUF012 (test-only shared log)

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        self.ranges.append(rng)
        start = int(rng[6:-1]) if rng and self.honour_range else 0
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_next:
            type(self).cut_next = False
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class loopback_server:
    """A loopback HTTP server on a free port, for the duration of a ``with`` block."""

    def __enter__(self) -> int:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("honour_range", [True, False])
def test_download_resumes_a_part_file(tmp_path: Path, no_proxy, honour_range: bool) -> None:
    dest = tmp_path / "dl" / "file.bin"
    _Handler.ranges, _Handler.cut_next, _Handler.honour_range = [], True, honour_range
    with loopback_server() as port:
        url = f"http://127.0.0.1:{port}/file.bin"
        with pytest.raises(DataError, match="run again to resume"):
            downloads.download(url, dest, progress=False, timeout=5)
        part = dest.with_name("file.bin.part")
        assert not dest.exists() and 0 < part.stat().st_size < len(PAYLOAD)
        have = part.stat().st_size
        assert downloads.download(url, dest, progress=False, timeout=5) == dest
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert _Handler.ranges == [None, f"bytes={have}-"]
    assert downloads.download(url, dest, progress=False) == dest  # present: no request at all
    assert len(_Handler.ranges) == 2
    assert os.listdir(dest.parent) == ["file.bin"]
