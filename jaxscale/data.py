"""Corpora, the token cache and batches (tokenizers by name: ``jaxscale.tokenizers``).

A corpus spec (``stdlib``, ``synthetic[:key=val,...]``, ``text:PATH``,
``task:NAME[:key=val,...]`` (generated arithmetic, ``jaxscale.tasks``), ``tinystories``,
``openwebtext[:N]``) is turned into documents, split into train/val by document, tokenized once
and cached as raw token files that later loads memory-map. Batches are pure functions of
``(seed, index)`` so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tiktoken
from tqdm import tqdm

from jaxscale.errors import DataError
from jaxscale.machine import cache_dir as default_cache_dir
from jaxscale.synthetic import Synthetic
from jaxscale.tokenizers import get_tokenizer

try:  # newer grain exports the dataset API at the top level ...
    from grain import MapDataset
except ImportError:  # ... grain 0.2.6-era releases only under grain.python
    from grain.python import MapDataset

CORPORA = (
    "stdlib, synthetic[:key=val,...], text:PATH, task:NAME[:key=val,...], tinystories, "
    "openwebtext[:N]"
)
_FORMAT = "jaxscale-tokens-v1"  # bump to invalidate every token cache
_EOT = "<|endoftext|>"
_VAL_PERCENT = 2  # a document goes to val when sha1(its id) % 100 < this


# --- corpus sources ---------------------------------------------------------------------------


@dataclass
class _Source:
    key: bytes  # identifies the exact text; hashed with the tokenizer into the fingerprint
    docs: Iterable[tuple[bool, bytes]]  # (is_val, document), in a fixed order
    n_bytes: int  # total document bytes, for the progress bar
    separate: bool = True  # end every document with an end-of-text token
    entropy: float | None = None  # exact entropy rate in nats/symbol, if known
    info: dict | None = None  # extra facts for the cache's .json


def _held_out(doc_id: str) -> bool:
    return int(hashlib.sha1(doc_id.encode()).hexdigest(), 16) % 100 < _VAL_PERCENT


def _split(named: list[tuple[str, bytes]], what: str) -> list[tuple[bool, bytes]]:
    """Hold out ~2% of documents by a hash of their id; at least one each way.

    Empty and exact-duplicate documents are dropped (first copy kept): a copy on each side
    would leak validation text into training.
    """
    seen: set[bytes] = set()
    docs = []
    for name, content in named:
        if content and content not in seen:
            seen.add(content)
            docs.append((_held_out(name), content))
    if len(docs) < 2:
        raise DataError(f"{what} is too small: need at least 2 documents, found {len(docs)}")
    if not any(is_val for is_val, _ in docs):
        docs[-1] = (True, docs[-1][1])
    if all(is_val for is_val, _ in docs):
        docs[0] = (False, docs[0][1])
    return docs


def _keyed(named: list[tuple[str, bytes]], *prefix: str) -> bytes:
    h = hashlib.sha256("\0".join(prefix).encode())
    for name, content in named:
        h.update(f"\0{name}\0{len(content)}\0".encode())
        h.update(content)
    return h.digest()


def _read_tree(root: Path, pattern: str, skip: set[str]) -> list[tuple[str, bytes]]:
    """(relative path, content) of the files under ``root``, sorted, none under a ``skip`` dir."""
    paths = sorted(root.rglob(pattern), key=lambda p: p.relative_to(root).as_posix())
    return [
        (p.relative_to(root).as_posix(), p.read_bytes())
        for p in paths
        if p.is_file() and not skip.intersection(p.relative_to(root).parts[:-1])
    ]


def _stdlib() -> _Source:
    root = Path(sysconfig.get_paths()["stdlib"])
    named = _read_tree(root, "*.py", {"site-packages", "dist-packages"})
    version = sys.version.split()[0]
    return _Source(
        key=_keyed(named, "stdlib", version),
        docs=_split(named, "stdlib"),
        n_bytes=sum(len(c) for _, c in named),
        info={"python": version, "root": str(root)},
    )


def _text(arg: str) -> _Source:
    path = Path(arg).expanduser()
    if not arg or not path.exists():
        raise DataError(f"text corpus path not found: {arg!r} (use text:PATH to a file or folder)")
    if path.is_dir():  # documents = files; skip version-control folders
        named = _read_tree(path, "*", {".git", ".hg", ".svn"})
    else:  # documents = ~200 chunks, each cut just after a newline
        data, named, start = path.read_bytes(), [], 0
        size = min(1 << 16, max(256, len(data) // 200))
        while start < len(data):
            end = data.find(b"\n", start + size)
            end = len(data) if end < 0 else end + 1
            named.append((f"chunk{len(named)}", data[start:end]))
            start = end
    return _Source(
        key=_keyed(named, "text"),
        docs=_split(named, f"text:{arg}"),
        n_bytes=sum(len(c) for _, c in named),
        info={"path": str(path.resolve())},
    )


def _downloaded(kind: str, arg: str, cache_dir: Path, progress: bool) -> _Source:
    from jaxscale import downloads  # lazy: downloads imports DataError from this module

    folder = cache_dir / "downloads"
    if kind == "tinystories":  # has its own train/valid files
        paths = downloads.fetch_tinystories(folder, progress=progress)
        docs = (
            (split == "val", doc) for split, p in paths.items() for doc in downloads.iter_stories(p)
        )
    else:
        paths = dict(enumerate(downloads.fetch_openwebtext(folder, arg, progress=progress)))
        docs = (
            (_held_out(name), doc)
            for p in paths.values()
            for name, doc in downloads.iter_openwebtext(p)
        )
    # a download is renamed into place only when whole, so name + size identify it
    sizes = {str(k): p.stat().st_size for k, p in paths.items()}
    return _Source(
        key=f"{kind}\0{sizes}".encode(),
        docs=docs,
        n_bytes=sum(sizes.values()) if kind == "tinystories" else 0,  # owt: sizes are compressed
        info={"files": [str(p) for p in paths.values()]},
    )


# --- the synthetic Markov source --------------------------------------------------------------


# 94 printable ASCII symbols: each is one byte, so one token under the bytes tokenizer.
def _synthetic(arg: str) -> _Source:
    spec = Synthetic.parse(arg)
    n_train = -(-spec.tokens // spec.doc)
    n_val = max(1, round(spec.tokens * spec.val_fraction / spec.doc))

    def docs() -> Iterator[tuple[bool, bytes]]:
        # Train and val come from different streams; blocks of documents bound the memory.
        for is_val, n, stream in ((False, n_train, 1), (True, n_val, 2)):
            for block, start in enumerate(range(0, n, 1024)):
                rows = spec.sample(min(1024, n - start), stream, block)
                yield from ((is_val, row.tobytes()) for row in rows)

    return _Source(
        key=f"synthetic-v1\0{asdict(spec)}".encode(),
        docs=docs(),
        n_bytes=(n_train + n_val) * spec.doc,
        separate=False,
        entropy=spec.entropy_rate(),
        info=asdict(spec),
    )


def _task(arg: str) -> _Source:
    from jaxscale.tasks import Task, task_documents  # lazy: only task corpora need it

    task = Task.parse(arg)
    docs = task_documents(task)
    return _Source(
        key=_keyed([("", d) for _, d in docs], "task", task.split().fingerprint),
        docs=docs,
        n_bytes=sum(len(d) for _, d in docs),
        separate=False,  # every line ends in a newline, the answer's own end
        info={"task": task.spec(), "split_fingerprint": task.split().fingerprint},
    )


def _source(spec: str, cache_dir: Path, progress: bool) -> _Source:
    kind, colon, arg = spec.partition(":")
    if spec == "stdlib":
        return _stdlib()
    if kind == "task" and colon:
        return _task(arg)
    if kind == "synthetic":
        return _synthetic(arg)
    if kind == "text" and colon:
        return _text(arg)
    if spec == "tinystories" or kind == "openwebtext":
        return _downloaded(kind, arg if colon else "1", cache_dir, progress)
    raise DataError(f"unknown corpus {spec!r}; use one of: {CORPORA}")


# --- tokenizing into the cache ----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Corpus:
    """A tokenized corpus: train/val token memmaps plus what is needed to read the losses.

    Example:
      >>> c = load_corpus("synthetic:tokens=100000")
      >>> c.train.dtype, c.n_vocab, round(c.entropy, 3)  # doctest: +SKIP
      (dtype('uint16'), 256, 2.209)
    """

    name: str  # the spec as given, e.g. "stdlib", "synthetic", "text:/path"
    tokenizer: str  # "bytes" | "gpt2"
    fingerprint: str  # short hex hash of the exact text (+ python version for stdlib) + tokenizer
    train: np.ndarray  # 1-D token memmap (uint16, or uint32 past 65535 tokens), train documents
    val: np.ndarray  # 1-D token memmap of held-out documents (disjoint from train)
    n_vocab: int
    bytes_per_token: float  # val bytes / val tokens: bits/byte = loss / ln 2 / bytes_per_token
    entropy: float | None  # synthetic + bytes only: exact entropy rate in nats/token
    n_docs: int = 0  # documents, train + val
    n_bytes: int = 0  # document bytes, train + val

    @property
    def unique_train_tokens(self) -> int:
        """Number of distinct-position training tokens, ``len(train)``."""
        return len(self.train)


def _encode(enc: tiktoken.Encoding, docs: list[bytes], eot: int | None) -> np.ndarray:
    if enc.name == "bytes":  # token id == byte value: no tokenizer call needed
        sep = b"" if eot is None else bytes([eot])
        return np.frombuffer(b"".join(d + sep for d in docs), np.uint8)
    texts = [d.decode("utf-8", errors="replace") for d in docs]
    ids = enc.encode_ordinary_batch(texts)
    return np.fromiter(
        (t for doc in ids for t in ([*doc, eot] if eot is not None else doc)), np.int64
    )


def _build(source: _Source, enc: tiktoken.Encoding, base: Path, progress: bool) -> dict:
    """Tokenize ``source`` into ``base.{train,val}.bin`` + ``base.json``, each atomically."""
    dtype = np.uint16 if enc.n_vocab <= 65535 else np.uint32
    eot = None
    if source.separate:  # bytes has no special tokens: NUL, absent from text, ends a document
        eot = enc.encode_single_token(_EOT) if _EOT in enc.special_tokens_set else 0
    splits = ("train", "val")
    tmp = {s: Path(f"{base}.{s}.bin.tmp{os.getpid()}") for s in splits}
    counts = {s: {"tokens": 0, "bytes": 0, "docs": 0} for s in splits}
    pending: dict[str, list[bytes]] = {s: [] for s in splits}
    long_job = source.n_bytes == 0 or source.n_bytes > 1 << 24
    bar = tqdm(
        total=source.n_bytes or None,
        unit="B",
        unit_scale=True,
        disable=not (progress and long_job),
        desc=f"tokenizing ({enc.name})",
    )
    with bar, open(tmp["train"], "wb") as f_train, open(tmp["val"], "wb") as f_val:
        files = {"train": f_train, "val": f_val}

        def flush(split: str) -> None:
            tokens = _encode(enc, pending[split], eot).astype(dtype)
            files[split].write(tokens.tobytes())
            counts[split]["tokens"] += len(tokens)
            pending[split].clear()

        for is_val, doc in source.docs:
            split = splits[is_val]
            pending[split].append(doc)
            # a separator counts as one byte, so bytes_per_token is exactly 1 under bytes
            counts[split]["bytes"] += len(doc) + (eot is not None)
            counts[split]["docs"] += 1
            bar.update(len(doc))
            if len(pending[split]) == 1024:  # tokenize in batches of documents
                flush(split)
        flush("train")
        flush("val")
    for split in splits:
        if counts[split]["tokens"] == 0:
            raise DataError(f"corpus has no {split} tokens")
        os.replace(tmp[split], f"{base}.{split}.bin")
    meta = {"format": _FORMAT, "dtype": np.dtype(dtype).name, "n_vocab": enc.n_vocab}
    meta |= {"entropy": source.entropy, "counts": counts, "info": source.info}
    tmp_json = Path(f"{base}.json.tmp{os.getpid()}")
    tmp_json.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_json, f"{base}.json")  # written last: its presence marks a complete cache
    return meta


def _cached(base: Path) -> dict | None:
    try:
        meta = json.loads(Path(f"{base}.json").read_text())
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in ("train", "val"):
            if os.path.getsize(f"{base}.{split}.bin") != meta["counts"][split]["tokens"] * itemsize:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta if meta.get("format") == _FORMAT else None


def load_corpus(
    spec: str, tokenizer: str = "bytes", *, cache_dir: Path | None = None, progress: bool = True
) -> Corpus:
    """Load corpus ``spec`` tokenized by ``tokenizer``, tokenizing once into a cache.

    Documents are split ~98/2 into train/val by a hash of their name (stdlib, text) or by the
    dataset's own split (tinystories); the token files are
    ``<cache_dir>/tokens/<fingerprint>.{train,val}.bin`` and later loads memory-map them.

    Args:
      spec: ``stdlib`` (this Python's standard library ``.py`` files), ``synthetic`` or
        ``synthetic:key=val,...`` (a Markov chain with exact entropy; keys as in
        :class:`Synthetic`), ``text:PATH`` (a file or folder), ``tinystories``,
        ``openwebtext[:N]`` (N of 21 shards; these two download).
      tokenizer: ``"bytes"`` or ``"gpt2"``.
      cache_dir: defaults to ``$JAXSCALE_CACHE`` or ``~/.cache/jaxscale``.
      progress: show a progress bar on long tokenizing/downloading.
    Returns:
      A :class:`Corpus`. ``entropy`` is set only for synthetic + bytes (under gpt2 a token is
      not one symbol, so the per-token rate is unknown).
    Raises:
      DataError: unknown spec/tokenizer, missing path, or an offline download.

    Example:
      >>> corpus = load_corpus("stdlib")
      >>> len(corpus.train) > 30_000_000  # doctest: +SKIP
      True
    """
    enc = get_tokenizer(tokenizer)
    cache_dir = Path(cache_dir or default_cache_dir()).expanduser()
    source = _source(spec, cache_dir, progress)
    fingerprint = hashlib.sha256(b"\0".join([_FORMAT.encode(), tokenizer.encode(), source.key]))
    fingerprint = fingerprint.hexdigest()[:16]
    base = cache_dir / "tokens" / fingerprint
    base.parent.mkdir(parents=True, exist_ok=True)
    meta = _cached(base) or _build(source, enc, base, progress)
    counts = meta["counts"]
    train, val = (
        np.memmap(f"{base}.{s}.bin", dtype=meta["dtype"], mode="r") for s in ("train", "val")
    )
    return Corpus(
        name=spec,
        tokenizer=tokenizer,
        fingerprint=fingerprint,
        train=train,
        val=val,
        n_vocab=meta["n_vocab"],
        bytes_per_token=counts["val"]["bytes"] / counts["val"]["tokens"],
        entropy=meta["entropy"] if tokenizer == "bytes" else None,
        n_docs=counts["train"]["docs"] + counts["val"]["docs"],
        n_bytes=counts["train"]["bytes"] + counts["val"]["bytes"],
    )


# --- batches ----------------------------------------------------------------------------------


def _random_windows(i: int, *, tokens: np.ndarray, batch_size: int, context: int, seed: int):
    rng = np.random.default_rng((seed, int(i)))  # a pure function of (seed, i): resumable
    starts = rng.integers(0, len(tokens) - context, size=batch_size)
    # asarray: a plain ndarray, not a file-less np.memmap view
    return np.asarray(tokens[starts[:, None] + np.arange(context + 1)], dtype=np.int32)


def batch_dataset(
    tokens: np.ndarray, *, batch_size: int, context: int, seed: int, num_batches: int
) -> MapDataset:
    """A deterministic dataset of ``num_batches`` batches of random windows of ``tokens``.

    Item ``i`` is an int32 array ``(batch_size, context + 1)`` (inputs ``[:, :-1]``, targets
    ``[:, 1:]``) whose window offsets come from ``np.random.default_rng((seed, i))``, so a run
    resumed at batch ``k`` sees exactly ``ds[k:]`` (or restores a ``to_iter_dataset()``
    iterator with ``get_state``/``set_state``).

    Example:
      >>> ds = batch_dataset(np.arange(1000), batch_size=4, context=16, seed=0, num_batches=10)
      >>> ds[3].shape, ds[3].dtype
      ((4, 17), dtype('int32'))
    """
    if len(tokens) < context + 1:
        raise DataError(f"{len(tokens)} tokens are too few for context {context}")
    fn = functools.partial(
        _random_windows, tokens=tokens, batch_size=batch_size, context=context, seed=seed
    )
    # range(...).map(...) exists in every grain MapDataset release we support (0.2.6+).
    return MapDataset.range(num_batches).map(fn)


def eval_batches(
    tokens: np.ndarray, *, batch_size: int, context: int, max_tokens: int
) -> Iterator[np.ndarray]:
    """Deterministic, non-overlapping validation windows spread evenly over ``tokens``.

    ``n = min(max_tokens, len(tokens) - 1) // context`` windows (at least one) start ``stride``
    tokens apart, the stride as wide as the tokens allow (at least ``context``): window ``j`` is
    ``tokens[j*stride : j*stride + context + 1]``. Windows predict disjoint targets, and a
    validation smaller than the split samples every part of it rather than its first documents
    only (a corpus' files differ, and the first few would make a ladder's losses depend on how
    well each run happens to fit those). The last batch keeps the remaining windows and may be
    smaller, so weight batch means by their row counts.

    Yields:
      int32 arrays of shape ``(<= batch_size, context + 1)``.

    Example:
      >>> [b.shape for b in eval_batches(np.arange(100), batch_size=2, context=10, max_tokens=50)]
      [(2, 11), (2, 11), (1, 11)]
      >>> next(eval_batches(np.arange(100), batch_size=2, context=10, max_tokens=20))[:, 0]
      array([ 0, 89], dtype=int32)
    """
    if len(tokens) < context + 1:  # checked here, not at the first next(): fail at the call
        raise DataError(
            f"validation has {len(tokens)} tokens, fewer than context + 1 = {context + 1}"
        )
    n = max(1, min(max_tokens, len(tokens) - 1) // context)
    stride = max(context, (len(tokens) - 1 - context) // max(1, n - 1))
    offsets = np.arange(context + 1)
    return (
        np.asarray(
            tokens[np.arange(i, min(n, i + batch_size))[:, None] * stride + offsets], np.int32
        )
        for i in range(0, n, batch_size)
    )
