"""The public datasets the documentation uses, downloaded once, verified and kept in a cache.

    from unrolled import datasets
    datasets.list_datasets()                  # ['airline-passengers', 'eng-fra-tatoeba', ...]
    text = datasets.fetch("tinyshakespeare")  # Path of the verified local file (downloaded once)

Each dataset is one or several files, each with its upstream URL (a raw.githubusercontent.com URL pinned
to a commit), its size in bytes and its SHA-256. :func:`fetch` returns the local file of a one-file dataset
and the folder of a several-file one (``names``: one ``<language>.txt`` per class).

- **Where**: ``$UNROLLED_DATA`` if set, else ``$XDG_CACHE_HOME/unrolled``, else ``~/.cache/unrolled``;
  one folder per dataset in it.
- **Verified**: a download is written to ``<file>.part``, checked for size and SHA-256, and only then
  moved into place (``os.replace``), so a file at its final path is always a complete, verified one. A
  mismatch deletes the bad file and raises :class:`DatasetError` naming the dataset, the URL, expected and
  got. A cache hit checks sizes only; ``verify=True`` re-hashes.
- **Resumable**: an interrupted download keeps its ``.part`` file; the next fetch asks for the rest with
  an HTTP ``Range`` request (and starts again if the server ignores it).
- **Mirrors**: ``base_url`` or ``$UNROLLED_DATA_MIRROR`` — an ``http(s)://`` or ``file://`` URL, or a
  local folder — replaces the upstream URL by ``<mirror>/<mirror_path>``, where ``mirror_path`` is the
  file's place in the layout of the project's shared data folder (``text/tinyshakespeare.txt``, ...).
  ``UNROLLED_DATA_MIRROR=/path/to/shared/data`` makes every fetch a verified local copy.

Standard library only (urllib), plus tqdm for the progress bar on stderr.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from unrolled._checks import one_of, positive_float

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "RemoteFile",
    "default_cache_dir",
    "ensure",
    "fetch",
    "info",
    "list_datasets",
    "path",
]

_CHUNK = 1 << 16
_BAR_MIN_BYTES = 256 * 1024  # below this a download takes a blink: no bar
_USER_AGENT = "unrolled-datasets (Python urllib)"


class DatasetError(OSError):
    """A download failed, was interrupted or did not match its registered size and SHA-256."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset.

    name : the file's name in the dataset's cache folder.
    url : upstream URL, pinned to a commit.
    sha256 : hex digest of the exact bytes.
    size : bytes.
    mirror_path : where a mirror holds it (the layout of the project's shared data folder).
    """

    name: str
    url: str
    sha256: str
    size: int
    mirror_path: str


@dataclass(frozen=True)
class Dataset:
    """A named dataset: its files, a one-line description, licence and citation as the source states them."""

    name: str
    description: str
    files: tuple[RemoteFile, ...]
    licence: str
    citation: str

    @property
    def size(self) -> int:
        """Total bytes of all files."""
        return sum(f.size for f in self.files)


# --------------------------------------------------------------------------- the registry
# Sizes and SHA-256 are those of ../shared/data (MANIFEST.sha256); tests/core/test_datasets.py compares them
# with the manifest, so the registry cannot drift from the files the documented results were measured on.
_GH = "https://raw.githubusercontent.com"
_CHAR_RNN = f"{_GH}/karpathy/char-rnn/6f9487a"
_PRACTICAL_PYTORCH = f"{_GH}/spro/practical-pytorch/c520c52"
_SEQ2SEQ = f"{_GH}/NJUxlj/seq2seq-attention-translation/b20755b"
_BROWNLEE_AIRLINE = f"{_GH}/jbrownlee/Datasets/d20fcb6"
# The shared data names no commit for the sunspots file; this one holds monthly-sunspots.csv/.names.
_BROWNLEE_SUNSPOTS = f"{_GH}/jbrownlee/Datasets/7041c0cc3d65519cf5af38b3afa82087a7d80748"

# language: (sha256, bytes) of spro/practical-pytorch data/names/<language>.txt
_NAMES = {
    "Arabic": ("6f424a8dbe51cbbbabab7a57d38b617210125e4e3991f3c657cb79b8f104bafc", 13190),
    "Chinese": ("09ba8f1f7e38dbc99372d461b26ad4433b811fc6bfa6a3ecca6fe11a9a777465", 1246),
    "Czech": ("e17ab0ec47616a72c39cb85c783f70c3663ab64488721e5d8378f146d2226be7", 3916),
    "Dutch": ("924f32b635170eae561f84538632138fc07d4c8bbd70ba3fb980de1ecc4d2af3", 2351),
    "English": ("9cca037066d3d5989e24bc01801416162de506b5e28e15b7c092a47905d29bf2", 27125),
    "French": ("81e65b36c60ed5b89a17422f6edcadbb89546f38ad69e960e64e7ba682012a95", 2178),
    "German": ("7449cd590b97a733e18d613a4155decd77ec35dc5f8aadd7a82204dce4f051db", 5610),
    "Greek": ("3555b5186de7f401e6d991b088e9e644ca3099116477818c25ab5793801389e6", 1981),
    "Irish": ("cf8c7013256252a88d2503127b87282a11f21b2ff6db1bded68834c19a1ec058", 1858),
    "Italian": ("f88414c27d0606a11a678b4859277828c2565d6cc4d9ee932deef6e94f3b35e4", 5657),
    "Japanese": ("e0e717e114fec3e7eade4d9dabe0067c475f43147e36a22b47902ee76ad9e67f", 7622),
    "Korean": ("cd54221ccb362a6cba4c78828838cf3268a0e59744767a37cf6ec4b74036b136", 423),
    "Polish": ("45bab898af2f60ed3a728bbf6980e28821011a7caa53227553b5785903a40826", 1165),
    "Portuguese": ("50a8735f41f4f73757c8ce5b16cb0275cd86b2b214bcbc8c9805f508cb131c53", 554),
    "Russian": ("0cfe53ac18041e8f63666aa77313e0a3ff378facb132abee052d8ebdc8c3d62c", 85168),
    "Scottish": ("78d0252711d87d948ea86fe34826c51d2d794a8e52d15b5d6f7b6244d45d62dd", 752),
    "Spanish": ("1bcb462ed3316756a85781d68232bddae04498fdddd5d9219c53fd1fbdeba7a7", 2284),
    "Vietnamese": ("f3f9e4164ab47601178a6e45b216464a64122f49d05541f24bf18a757253281d", 339),
}

_REGISTRY = (
    Dataset(
        name="tinyshakespeare",
        description="Tiny Shakespeare: 1,115,394 characters of the plays (65 symbols), for train charlm",
        files=(
            RemoteFile(
                "tinyshakespeare.txt",
                f"{_CHAR_RNN}/data/tinyshakespeare/input.txt",
                "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                1115394,
                "text/tinyshakespeare.txt",
            ),
        ),
        licence="text in the public domain; collected in karpathy/char-rnn (MIT)",
        citation="A. Karpathy, char-rnn (2015), https://github.com/karpathy/char-rnn",
    ),
    Dataset(
        name="names",
        description="20,050 surnames in 18 languages, one <language>.txt per class, for train classify",
        # 18 raw files, not the PyTorch tutorial's data.zip: that archive also holds the 9.5 MB eng-fra.txt
        # and its checksum is not one the documented results were measured on.
        files=(
            *(
                RemoteFile(
                    f"{lang}.txt",
                    f"{_PRACTICAL_PYTORCH}/data/names/{lang}.txt",
                    sha,
                    size,
                    f"classification/names/{lang}.txt",
                )
                for lang, (sha, size) in _NAMES.items()
            ),
            # The licence travels with the data (load_text_folder reads *.txt only, so it is no class).
            RemoteFile(
                "LICENSE.practical-pytorch",
                f"{_PRACTICAL_PYTORCH}/LICENSE",
                "43466675f54af3b7add4df3819d9e36a922c7e1cdf17791cb132e3f8328a0df8",
                1081,
                "classification/names/LICENSE.practical-pytorch",
            ),
        ),
        licence="MIT (spro/practical-pytorch)",
        citation="S. Robertson, Practical PyTorch: classifying names with a character-level RNN (2017), "
        "https://github.com/spro/practical-pytorch",
    ),
    Dataset(
        name="eng-fra-tatoeba",
        description="5,000 English-French sentence pairs from Tatoeba (English <= 5 words), "
        "tab-separated, for train translate",
        files=(
            RemoteFile(
                "eng-fra-tatoeba-subset.txt",
                f"{_SEQ2SEQ}/data/eng-fra.txt",
                "d952b56a181da5270b7bb4ded3f3bbe61e67a9b1de0e0fbc1d46438c71fb55a7",
                562864,
                "seq2seq/eng-fra-tatoeba-subset.txt",
            ),
        ),
        licence="CC-BY 2.0 (France), Tatoeba; the attribution is the third column of every line",
        citation="Tatoeba, https://tatoeba.org, via the manythings.org/anki pairs; "
        "file from https://github.com/NJUxlj/seq2seq-attention-translation",
    ),
    Dataset(
        name="monthly-sunspots",
        description="Zurich monthly sunspot numbers, 2,820 values 1749-01..1983-12 (CSV: Month, Sunspots)",
        files=(
            RemoteFile(
                "monthly-sunspots.csv",
                f"{_BROWNLEE_SUNSPOTS}/monthly-sunspots.csv",
                "c4ec8cc57d9f6fb6ecdb3e1f37f25b6f4badd5124c55931052b0cd2fc3bc71f3",
                45039,
                "timeseries/monthly-sunspots.csv",
            ),
        ),
        licence="none stated (Time Series Data Library)",
        citation="D. F. Andrews and A. M. Herzberg, Data (1985), via the Time Series Data Library; "
        "file from https://github.com/jbrownlee/Datasets",
    ),
    Dataset(
        name="airline-passengers",
        description="International airline passengers, monthly totals in thousands, 144 values "
        "1949-01..1960-12 (CSV: Month, Passengers)",
        files=(
            RemoteFile(
                "airline-passengers.csv",
                f"{_BROWNLEE_AIRLINE}/airline-passengers.csv",
                "8cb51be753a718d9be5d76d7e238cc224792754676adc21faa59e954b0201621",
                2180,
                "timeseries/airline-passengers.csv",
            ),
        ),
        licence="none stated (Time Series Data Library)",
        citation="G. E. P. Box and G. M. Jenkins, Time Series Analysis (1976), via the Time Series Data "
        "Library; file from https://github.com/jbrownlee/Datasets",
    ),
)
DATASETS: dict[str, Dataset] = {d.name: d for d in sorted(_REGISTRY, key=lambda d: d.name)}


# --------------------------------------------------------------------------- public API
def list_datasets() -> list[str]:
    """The names :func:`fetch` knows, sorted."""
    return list(DATASETS)


def info(name: str) -> Dataset:
    """The registry entry of ``name`` (files with URL, size and SHA-256; licence; citation)."""
    return DATASETS[one_of("name", name, list(DATASETS))]


def default_cache_dir() -> Path:
    """``$UNROLLED_DATA``, else ``$XDG_CACHE_HOME/unrolled``, else ``~/.cache/unrolled``."""
    if os.environ.get("UNROLLED_DATA"):
        return Path(os.environ["UNROLLED_DATA"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "unrolled"


def path(name: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local path of a fetched dataset (its file, or its folder if it has several), without any network.

    Raises
    ------
    FileNotFoundError
        a file is missing or has the wrong size; the message says how to fetch it.
    """
    ds = info(name)
    folder = _root(cache_dir) / ds.name
    for f in ds.files:
        p = folder / f.name
        if not (p.is_file() and p.stat().st_size == f.size):
            raise FileNotFoundError(
                f"{ds.name}: not downloaded ({p} is missing or incomplete): run `unrolled data fetch "
                f"{ds.name}` or, in Python, unrolled.datasets.fetch({ds.name!r})"
            )
    return _result(ds, folder)


def ensure(name: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The local path of ``name``: :func:`path` when it is in the cache (no network, nothing printed), else
    one line on stderr saying what is downloaded from where, then :func:`fetch`.

    This is what ``--dataset NAME`` of the commands calls, so that a first use downloads (visibly, once)
    and every later one reads the cache.
    """
    try:
        return path(name, cache_dir=cache_dir)
    except FileNotFoundError:
        pass
    ds = info(name)
    mirror = os.environ.get("UNROLLED_DATA_MIRROR") or None
    where = mirror if mirror is not None else urllib.parse.urlsplit(ds.files[0].url).netloc
    _say(
        progress,
        f"{ds.name}: not in the cache yet: downloading {ds.size:,} bytes from {where} into "
        f"{_root(cache_dir) / ds.name} (once)",
    )
    return fetch(name, cache_dir=cache_dir, progress=progress)


def fetch(
    name: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    base_url: str | os.PathLike | None = None,
    progress: bool = True,
    verify: bool = False,
    timeout: float = 30.0,
) -> Path:
    """Download ``name`` into the cache once, verified; return its local path.

    Parameters
    ----------
    name : one of :func:`list_datasets`.
    cache_dir : the cache root (default :func:`default_cache_dir`); the dataset goes in ``cache_dir/name``.
    base_url : a mirror (``http(s)://``, ``file://`` or a local folder) replacing the upstream URLs; default
        ``$UNROLLED_DATA_MIRROR``, else the upstream URLs.
    progress : a progress bar on stderr for downloads of 256 KiB or more, and one line saying what was
        done (downloaded, or found in the cache).
    verify : re-hash files already in the cache (a cache hit otherwise checks sizes only; every download
        is always hashed).
    timeout : seconds without an answer before a download is given up (its partial file is kept).

    Returns
    -------
    The file of a one-file dataset, the folder of a several-file one.

    Raises
    ------
    ValueError
        unknown name (the message lists the known ones).
    DatasetError
        a download failed or was interrupted (the partial file is kept: fetch again to resume), or the
        bytes do not match the registered size and SHA-256 (the bad file is deleted).
    """
    ds = info(name)
    timeout = positive_float("timeout", timeout)
    folder = _root(cache_dir) / ds.name
    mirror = base_url if base_url is not None else os.environ.get("UNROLLED_DATA_MIRROR") or None

    todo = [f for f in ds.files if not _cached(folder / f.name, f, verify, progress)]
    if not todo:
        _say(progress, f"{ds.name}: already in {folder} ({'hashes' if verify else 'sizes'} checked)")
        return _result(ds, folder)

    folder.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    total = sum(f.size for f in todo)
    done = sum(
        min(_part(folder / f.name).stat().st_size, f.size) for f in todo if _part(folder / f.name).exists()
    )
    with tqdm(
        total=total,
        initial=done,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=ds.name,
        file=sys.stderr,
        disable=not progress or total < _BAR_MIN_BYTES,
    ) as bar:
        for f in todo:
            _download(ds, f, _source(f, mirror), folder / f.name, timeout, bar)
    _say(progress, f"{ds.name}: {_files(len(todo))}, {total:,} bytes, downloaded and verified, in {folder}")
    return _result(ds, folder)


# --------------------------------------------------------------------------- download, resume, verify
def _download(ds: Dataset, f: RemoteFile, url: str, dest: Path, timeout: float, bar) -> None:
    """``url`` → ``dest.part`` (resuming what is there) → size and SHA-256 checked → ``dest``."""
    part = _part(dest)
    offset = part.stat().st_size if part.exists() else 0
    if offset > f.size:  # longer than the file can be: nothing in it is worth keeping
        part.unlink()
        bar.update(-f.size)
        offset = 0
    if offset < f.size:
        try:
            _receive(url, part, offset, f.size, timeout, bar)
        except urllib.error.HTTPError as e:
            if e.code == 416:  # the server's file is shorter than our partial one: start again next time
                part.unlink(missing_ok=True)
            raise DatasetError(f"{ds.name}: download of {url} failed: HTTP {e.code} {e.reason}") from None
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts and resets are OSErrors
            got = part.stat().st_size if part.exists() else 0
            raise DatasetError(
                f"{ds.name}: download of {url} interrupted after {got:,} of {f.size:,} bytes "
                f"({getattr(e, 'reason', e)}); {part} is kept: fetch again to resume"
            ) from None
    got = part.stat().st_size
    if got < f.size:  # the connection closed early without an error (urllib reads b"" then)
        raise DatasetError(
            f"{ds.name}: download of {url} interrupted after {got:,} of {f.size:,} bytes; "
            f"{part} is kept: fetch again to resume"
        )
    digest = _sha256(part)
    if got != f.size or digest != f.sha256:
        part.unlink()
        raise DatasetError(
            f"{ds.name}: {url}: expected {f.size:,} bytes with SHA-256 {f.sha256}, got {got:,} bytes with "
            f"SHA-256 {digest}; the downloaded file was deleted"
        )
    os.replace(part, dest)  # atomic: the final path only ever holds a verified file


def _receive(url: str, part: Path, offset: int, size: int, timeout: float, bar) -> None:
    """Append bytes ``offset..`` of ``url`` to ``part``; rewrite it if the server sends the whole file."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
        # 206 with our start is the continuation; anything else (200, or file:// which has no status) is the
        # whole file from byte 0, so the partial file is rewritten.
        resumed = offset and r.status == 206 and _range_start(r.headers.get("Content-Range")) == offset
        if offset and not resumed:
            bar.update(-offset)
            offset = 0
        with open(part, "ab" if offset else "wb") as out:
            # Read at most one byte past the expected size: a wrong URL serving something huge is found out
            # by the size check without downloading all of it.
            left = size - offset + 1
            while left > 0:
                chunk = r.read(min(_CHUNK, left))
                if not chunk:
                    break
                out.write(chunk)
                left -= len(chunk)
                bar.update(len(chunk))


def _range_start(content_range: str | None) -> int | None:
    """``bytes 100-199/200`` → 100."""
    try:
        unit, _, spec = content_range.partition(" ")
        return int(spec.split("-", 1)[0]) if unit == "bytes" else None
    except (AttributeError, ValueError):
        return None


def _cached(p: Path, f: RemoteFile, verify: bool, progress: bool) -> bool:
    """Is ``p`` the registered file? A wrong one is deleted (and fetched again), saying so."""
    if not p.is_file():
        return False
    if p.stat().st_size == f.size and (not verify or _sha256(p) == f.sha256):
        return True
    _say(progress, f"{p}: does not match its registered size/SHA-256; deleted, fetching again")
    p.unlink()
    return False


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- small helpers
def _root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _result(ds: Dataset, folder: Path) -> Path:
    return folder / ds.files[0].name if len(ds.files) == 1 else folder


def _source(f: RemoteFile, mirror: str | os.PathLike | None) -> str:
    """The upstream URL, or ``<mirror>/<mirror_path>``; a mirror without a URL scheme is a local folder."""
    if mirror is None:
        return f.url
    base = os.fspath(mirror)
    # A one-letter "scheme" is a Windows drive (C:\...), so a path, not a URL.
    if len(urllib.parse.urlsplit(base).scheme) < 2:
        base = Path(base).expanduser().resolve().as_uri()
    return base.rstrip("/") + "/" + urllib.parse.quote(f.mirror_path)


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _say(on: bool, msg: str) -> None:
    if on:
        print(f"unrolled: {msg}", file=sys.stderr)
