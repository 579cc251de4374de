"""Downloads of the real corpora (TinyStories, OpenWebText) that never hang offline.

Every fetch first probes the host (<= 3 s, DNS included); a missing network is a one-line
:class:`~jaxscale.data.DataError`. Downloads resume from a ``.part`` file with an HTTP Range
request and are renamed into place only when complete.
"""

from __future__ import annotations

import http.client
import lzma
import os
import socket
import tarfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from jaxscale.errors import DataError

PROBE_TIMEOUT = 3.0  # seconds for the reachability probe, DNS included
READ_TIMEOUT = 30.0  # seconds a connect or a read may stall before the download fails
_HF = "https://huggingface.co/datasets/"
TINYSTORIES = {
    "train": _HF + "roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-train.txt",
    "val": _HF + "roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-valid.txt",
}
OPENWEBTEXT = _HF + "Skylion007/openwebtext/resolve/main/subsets/urlsf_subset{:02d}.tar"
OPENWEBTEXT_SHARDS = 21  # urlsf_subset00 .. urlsf_subset20


def reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to ``url``'s host (or its configured proxy) opens in time.

    Runs in a daemon thread so that a slow DNS lookup, which ignores socket timeouts, cannot
    stall the caller past ``timeout``.

    Example:
      >>> reachable("https://127.0.0.1:9/", timeout=0.5)
      False
    """
    parts = urllib.parse.urlsplit(url)
    target = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        target = p.hostname, p.port or 80
    opened: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection(target, timeout=timeout).close()
            opened.append(True)
        except OSError:
            opened.append(False)

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)  # a refusal returns at once; a hung lookup is abandoned
    return opened == [True]


def download(url: str, dest: Path, *, progress: bool = True, timeout: float = READ_TIMEOUT) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` if a previous attempt stopped.

    Args:
      url: an http(s) URL.
      dest: the final path; returned at once if it already exists.
      progress: show a tqdm bar.
      timeout: seconds a connect or any read may stall.
    Returns:
      ``dest``, complete (renamed from the ``.part`` file only once every byte arrived).
    Raises:
      DataError: HTTP or network failure; what arrived stays in ``.part`` for the next call.
    """
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing past `have`: the .part is whole, or stale
            if e.headers.get("Content-Range", "").endswith(f"/{have}"):
                os.replace(part, dest)
                return dest
            part.unlink()
        raise DataError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise DataError(f"downloading {url} failed: {e}") from None
    with response:
        resumed = response.status == 206  # 200 means the server ignored Range: start over
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length else None
        bar = tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            desc=dest.name,
            disable=not progress,
        )
        with bar, open(part, "ab" if resumed else "wb") as f:
            try:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as e:
                raise DataError(f"downloading {url} stopped ({e}); run again to resume") from None
    if total is not None and part.stat().st_size != total:
        raise DataError(f"downloading {url} stopped early; run again to resume")
    os.replace(part, dest)
    return dest


def fetch(url: str, dest: Path, *, what: str, progress: bool = True) -> Path:
    """``download`` after a reachability probe; offline, a one-line DataError says what to do."""
    if not dest.exists() and not reachable(url):
        host = urllib.parse.urlsplit(url).hostname
        raise DataError(
            f"cannot reach {host} to download {what}; use corpus: stdlib / synthetic / "
            f"text:PATH, or place the file at {dest} (from {url})"
        )
    return download(url, dest, progress=progress)


def fetch_tinystories(folder: Path, *, progress: bool = True) -> dict[str, Path]:
    """The TinyStories V2 (GPT-4) train and validation text files, downloading if needed."""
    return {
        split: fetch(url, folder / url.rsplit("/", 1)[1], what="TinyStories", progress=progress)
        for split, url in TINYSTORIES.items()
    }


def fetch_openwebtext(folder: Path, shards: str, *, progress: bool = True) -> list[Path]:
    """The first ``shards`` OpenWebText subset tars (of 21, ~0.6 GB each), downloading if needed."""
    if not shards.isdigit() or not 1 <= int(shards) <= OPENWEBTEXT_SHARDS:
        raise DataError(f"openwebtext:N needs 1 <= N <= {OPENWEBTEXT_SHARDS}, got {shards!r}")
    urls = [OPENWEBTEXT.format(i) for i in range(int(shards))]
    return [
        fetch(url, folder / url.rsplit("/", 1)[1], what="OpenWebText", progress=progress)
        for url in urls
    ]


def iter_stories(
    path: Path, sep: bytes = b"<|endoftext|>", block: int = 1 << 24
) -> Iterator[bytes]:
    """The ``sep``-separated, stripped, non-empty documents of a text file, read in blocks."""
    rest = b""
    with open(path, "rb") as f:
        while data := f.read(block):
            *docs, rest = (rest + data).split(sep)
            yield from (d.strip() for d in docs if d.strip())
    if rest.strip():
        yield rest.strip()


def iter_openwebtext(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, text) of every document of an OpenWebText subset tar, in archive order.

    The subset is a tar of ``.xz`` files, each an xz-compressed tar of ``.txt`` documents.
    """
    with tarfile.open(path) as outer:
        for member in outer:
            inner_file = outer.extractfile(member) if member.name.endswith(".xz") else None
            if inner_file is None:
                continue
            with lzma.open(inner_file) as xz, tarfile.open(fileobj=xz, mode="r|") as inner:
                for doc in inner:
                    data = inner.extractfile(doc) if doc.isfile() else None
                    if data is not None:
                        yield doc.name, data.read()
