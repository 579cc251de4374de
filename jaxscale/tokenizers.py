"""Tokenizers by name: ``bytes`` (256 byte tokens, built offline) and ``gpt2`` (tiktoken's BPE,
whose two files must be cached or downloadable; never a hang on a missing network)."""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

import tiktoken

from jaxscale import downloads
from jaxscale.errors import DataError

TOKENIZERS = ("bytes", "gpt2")

_GPT2_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
# file URL -> sha256, as pinned by tiktoken_ext.openai_public.gpt2
_GPT2_FILES = {
    _GPT2_URL + "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    _GPT2_URL + "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


@functools.cache
def _bytes_encoding() -> tiktoken.Encoding:
    # Every byte is its own token and there are no merges, so the pattern only has to cover all
    # text; token id == byte value.
    ranks = {bytes([i]): i for i in range(256)}
    return tiktoken.Encoding("bytes", pat_str=r"[\s\S]+", mergeable_ranks=ranks, special_tokens={})


def _tiktoken_cache_dir() -> str | None:
    """Where tiktoken caches downloads (mirrors ``tiktoken.load.read_file_cached``)."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var] or None  # "" disables tiktoken's cache
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _gpt2_cached() -> bool:
    cache = _tiktoken_cache_dir()
    if cache is None:
        return False
    for url, sha in _GPT2_FILES.items():
        path = Path(cache, hashlib.sha1(url.encode()).hexdigest())
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            return False
    return True


def get_tokenizer(name: str) -> tiktoken.Encoding:
    """The tokenizer called ``name``, never hanging on a missing network.

    Args:
      name: ``"bytes"`` (256 byte tokens, built offline) or ``"gpt2"`` (tiktoken's GPT-2 BPE;
        its two files must be in tiktoken's cache or downloadable).
    Returns:
      A ``tiktoken.Encoding``.
    Raises:
      DataError: unknown name, or gpt2 files neither cached nor reachable.

    Example:
      >>> get_tokenizer("bytes").encode("hi")
      [104, 105]
    """
    if name == "bytes":
        return _bytes_encoding()
    if name != "gpt2":
        raise DataError(f"unknown tokenizer {name!r}; use one of: {', '.join(TOKENIZERS)}")
    # tiktoken fetches missing files with no timeout, so look before it leaps.
    if not _gpt2_cached() and not downloads.reachable(_GPT2_URL):
        sha1 = [hashlib.sha1(url.encode()).hexdigest() for url in _GPT2_FILES]
        raise DataError(
            f"gpt2 tokenizer files are not cached and {_GPT2_URL} is unreachable; save vocab.bpe "
            f"and encoder.json from there into TIKTOKEN_CACHE_DIR (now {_tiktoken_cache_dir()}) "
            f"named {sha1[0]} and {sha1[1]}, or use tokenizer: bytes"
        )
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # requests/IO errors from a flaky network
        raise DataError(f"could not load the gpt2 tokenizer: {e}".splitlines()[0]) from e
