"""unrolled.datasets: verified, resumable, cached downloads — served from ../shared/data on 127.0.0.1.

No test reaches the outside network: an autouse guard refuses every URL that is not local.
"""

from __future__ import annotations

import hashlib
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from unrolled import datasets
from unrolled.datasets import DatasetError

from conftest import SHARED_DATA, shared_data


class _Handler(BaseHTTPRequestHandler):
    """Serves the shared data folder; ``server.mode`` picks how well it behaves.

    range: honours ``Range: bytes=N-`` with 206; ignore: always the whole file with 200;
    drop: announces the whole file, sends half and closes; wrong: the right length, one byte changed.
    """

    def do_GET(self):  # noqa: N802 (the http.server spelling)
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        f = srv.root / urllib.parse.unquote(self.path.lstrip("/"))
        if not f.is_file():
            self.send_error(404)
            return
        body = f.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if srv.mode == "range" and rng and rng.startswith("bytes="):
            start = int(rng[len("bytes=") :].split("-")[0])
        if srv.mode == "wrong":
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Connection", "close")
        self.end_headers()
        if srv.mode == "drop":
            self.wfile.write(body[: len(body) // 2])
        else:
            self.wfile.write(body[start:])
        self.close_connection = True

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server():
    """A local server over ../shared/data: ``.url``, ``.mode`` (settable), ``.requests`` (path, Range)."""
    shared_data("MANIFEST.sha256")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.root, srv.mode, srv.requests = SHARED_DATA, "range", []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _local_only(monkeypatch):
    """Refuse any URL outside 127.0.0.1 and file://, and clear the environment the module reads."""
    real = urllib.request.urlopen

    def guarded(req, *a, **kw):
        url = req.full_url if isinstance(req, urllib.request.Request) else req
        parts = urllib.parse.urlsplit(url)
        assert parts.scheme == "file" or parts.hostname == "127.0.0.1", f"outside network: {url}"
        return real(req, *a, **kw)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)
    for var in ("UNROLLED_DATA", "UNROLLED_DATA_MIRROR"):
        monkeypatch.delenv(var, raising=False)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_fetch_downloads_every_file_of_a_dataset_and_returns_its_folder(server, tmp_path):
    got = datasets.fetch("names", cache_dir=tmp_path, base_url=server.url, progress=False)
    assert got == tmp_path / "names"
    for f in datasets.info("names").files:
        assert (got / f.name).read_bytes() == (SHARED_DATA / f.mirror_path).read_bytes()
    assert len(server.requests) == 19 and all(rng is None for _, rng in server.requests)
    assert not list(got.glob("*.part"))


def test_fetch_of_a_one_file_dataset_returns_the_file(server, tmp_path):
    got = datasets.fetch("tinyshakespeare", cache_dir=tmp_path, base_url=server.url, progress=False)
    assert got == tmp_path / "tinyshakespeare" / "tinyshakespeare.txt"
    assert _sha(got) == datasets.info("tinyshakespeare").files[0].sha256


def test_wrong_bytes_are_refused_and_nothing_is_left_in_the_cache(server, tmp_path):
    server.mode = "wrong"
    f = datasets.info("airline-passengers").files[0]
    with pytest.raises(DatasetError) as e:
        datasets.fetch("airline-passengers", cache_dir=tmp_path, base_url=server.url, progress=False)
    msg = str(e.value)
    assert "airline-passengers" in msg and f"{server.url}/timeseries/airline-passengers.csv" in msg
    assert f"expected 2,180 bytes with SHA-256 {f.sha256}, got 2,180 bytes with SHA-256 " in msg
    assert list((tmp_path / "airline-passengers").iterdir()) == []


def test_interrupted_download_resumes_with_a_range_request_from_the_partial_size(server, tmp_path):
    server.mode = "drop"
    with pytest.raises(
        DatasetError, match="interrupted after 281,432 of 562,864 bytes.*fetch again to resume"
    ):
        datasets.fetch("eng-fra-tatoeba", cache_dir=tmp_path, base_url=server.url, progress=False)
    part = tmp_path / "eng-fra-tatoeba" / "eng-fra-tatoeba-subset.txt.part"
    half = 562864 // 2
    assert part.stat().st_size == half
    assert not part.with_suffix("").exists()  # nothing unverified at the final path

    server.mode, server.requests = "range", []
    got = datasets.fetch("eng-fra-tatoeba", cache_dir=tmp_path, base_url=server.url, progress=False)
    assert server.requests == [("/seq2seq/eng-fra-tatoeba-subset.txt", f"bytes={half}-")]
    assert got.read_bytes() == (SHARED_DATA / "seq2seq/eng-fra-tatoeba-subset.txt").read_bytes()
    assert not part.exists()


def test_server_that_ignores_range_makes_the_download_start_again(server, tmp_path):
    # A partial file of wrong bytes: appending the server's whole file to it would fail the checksum, so
    # success proves the partial file was rewritten from byte 0.
    folder = tmp_path / "monthly-sunspots"
    folder.mkdir()
    (folder / "monthly-sunspots.csv.part").write_bytes(b"\x00" * 1000)
    server.mode = "ignore"
    got = datasets.fetch("monthly-sunspots", cache_dir=tmp_path, base_url=server.url, progress=False)
    assert server.requests == [("/timeseries/monthly-sunspots.csv", "bytes=1000-")]
    assert _sha(got) == datasets.info("monthly-sunspots").files[0].sha256


def test_cache_hit_makes_no_request_and_says_so(server, tmp_path, capsys):
    first = datasets.fetch("airline-passengers", cache_dir=tmp_path, base_url=server.url, progress=False)
    server.requests = []
    again = datasets.fetch("airline-passengers", cache_dir=tmp_path, base_url=server.url)
    assert again == first and server.requests == []
    assert f"airline-passengers: already in {tmp_path / 'airline-passengers'}" in capsys.readouterr().err


def test_verify_rehashes_the_cache_and_fetches_a_corrupted_file_again(server, tmp_path):
    p = datasets.fetch("airline-passengers", cache_dir=tmp_path, base_url=server.url, progress=False)
    good = p.read_bytes()
    p.write_bytes(good[::-1])  # same size: only a hash can tell
    server.requests = []
    datasets.fetch("airline-passengers", cache_dir=tmp_path, base_url=server.url, progress=False)
    assert server.requests == [] and p.read_bytes() == good[::-1]  # the cheap check trusts sizes
    datasets.fetch("airline-passengers", cache_dir=tmp_path, base_url=server.url, progress=False, verify=True)
    assert len(server.requests) == 1 and p.read_bytes() == good


def test_missing_file_is_an_error_naming_dataset_and_url(server, tmp_path):
    with pytest.raises(
        DatasetError, match=r"names: download of .*/nowhere/classification/names/\w+\.txt failed: HTTP 404"
    ):
        datasets.fetch("names", cache_dir=tmp_path, base_url=server.url + "/nowhere", progress=False)


@pytest.mark.parametrize("as_uri", [False, True])
def test_local_folder_or_file_url_mirror_is_a_verified_copy(tmp_path, as_uri):
    root = shared_data("MANIFEST.sha256").parent
    got = datasets.fetch(
        "names", cache_dir=tmp_path, base_url=root.as_uri() if as_uri else root, progress=False
    )
    assert sorted(p.name for p in got.iterdir()) == sorted(
        p.name for p in (root / "classification/names").iterdir()
    )


def test_mirror_from_the_environment_replaces_the_upstream_urls(server, tmp_path, monkeypatch):
    monkeypatch.setenv("UNROLLED_DATA_MIRROR", server.url)
    monkeypatch.setenv("UNROLLED_DATA", str(tmp_path))
    got = datasets.fetch("airline-passengers", progress=False)
    assert got == tmp_path / "airline-passengers" / "airline-passengers.csv"
    assert server.requests == [("/timeseries/airline-passengers.csv", None)]


def test_path_before_fetch_says_how_to_fetch_and_after_returns_the_file(server, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"unrolled data fetch tinyshakespeare.*fetch\('tinyshakespeare'\)"
    ):
        datasets.path("tinyshakespeare", cache_dir=tmp_path)
    got = datasets.fetch("tinyshakespeare", cache_dir=tmp_path, base_url=server.url, progress=False)
    server.requests = []
    assert datasets.path("tinyshakespeare", cache_dir=tmp_path) == got and server.requests == []


def test_unknown_name_is_one_error_listing_the_known_names(tmp_path):
    for call in (datasets.fetch, datasets.path, datasets.info):
        with pytest.raises(
            ValueError,
            match=r"name: expected one of 'airline-passengers', .*'tinyshakespeare', got 'shakespeare'",
        ):
            call("shakespeare")


def test_timeout_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="timeout: expected a positive number, got 0"):
        datasets.fetch("names", cache_dir=tmp_path, timeout=0)


def test_default_cache_dir_follows_unrolled_data_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert datasets.default_cache_dir() == tmp_path / "home" / ".cache" / "unrolled"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.default_cache_dir() == tmp_path / "xdg" / "unrolled"
    monkeypatch.setenv("UNROLLED_DATA", str(tmp_path / "data"))
    assert datasets.default_cache_dir() == tmp_path / "data"


def test_registry_sizes_and_hashes_equal_the_shared_manifest():
    manifest = shared_data("MANIFEST.sha256")
    sha = {}
    for line in manifest.read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        sha[rel.removeprefix("./")] = digest
    for name in datasets.list_datasets():
        for f in datasets.info(name).files:
            assert f.sha256 == sha[f.mirror_path], f"{name}: {f.name}"
            assert f.size == (SHARED_DATA / f.mirror_path).stat().st_size, f"{name}: {f.name}"
            assert f.url.startswith("https://raw.githubusercontent.com/"), f.url
    assert len([f for f in datasets.info("names").files if f.name.endswith(".txt")]) == 18


def test_progress_bar_on_stderr_for_large_files_only(server, tmp_path, capsys):
    datasets.fetch("tinyshakespeare", cache_dir=tmp_path, base_url=server.url)
    err = capsys.readouterr().err
    assert "tinyshakespeare: 100%" in err and "1,115,394 bytes, downloaded and verified" in err
    datasets.fetch("airline-passengers", cache_dir=tmp_path, base_url=server.url)
    err = capsys.readouterr().err
    assert "%" not in err and "airline-passengers: 1 file, 2,180 bytes, downloaded and verified" in err


# ------------------------------------------------------------- ensure, `unrolled data`, --dataset
def test_ensure_reads_the_cache_silently_and_downloads_a_missing_dataset_once_saying_so(
    server, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("UNROLLED_DATA_MIRROR", server.url)
    got = datasets.ensure("monthly-sunspots", cache_dir=tmp_path)
    err = capsys.readouterr().err
    assert f"monthly-sunspots: not in the cache yet: downloading 45,039 bytes from {server.url}" in err
    assert got == tmp_path / "monthly-sunspots" / "monthly-sunspots.csv" and len(server.requests) == 1
    assert datasets.ensure("monthly-sunspots", cache_dir=tmp_path) == got
    assert capsys.readouterr().err == "" and len(server.requests) == 1  # a cache hit: no request, no word


def _cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    from unrolled.commands import main

    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_data_fetch_prints_only_the_local_path_on_stdout_and_list_then_shows_it_cached(
    server, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("UNROLLED_DATA", str(tmp_path))
    monkeypatch.setenv("UNROLLED_DATA_MIRROR", server.url)
    rc, out, _ = _cli(capsys, ["data", "list"])
    listed = {line.split()[0]: line.split()[3] for line in out.splitlines()[1:] if line.strip()}
    assert rc == 0 and listed["airline-passengers"] == "no" and set(datasets.DATASETS) <= set(listed)
    rc, out, err = _cli(capsys, ["data", "fetch", "airline-passengers"])
    assert rc == 0 and out == f"{tmp_path / 'airline-passengers' / 'airline-passengers.csv'}\n"
    assert "downloaded and verified" in err
    rc, out, _ = _cli(capsys, ["data", "list"])
    assert next(x for x in out.splitlines() if x.startswith("airline-passengers")).split()[3] == "yes"


def test_data_info_shows_licence_citation_and_each_file_with_url_and_sha256(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNROLLED_DATA", str(tmp_path))
    rc, out, _ = _cli(capsys, ["data", "info", "tinyshakespeare"])
    f = datasets.info("tinyshakespeare").files[0]
    assert rc == 0 and "licence:" in out and "citation:" in out and f.url in out and f.sha256 in out
    assert "not downloaded (unrolled data fetch tinyshakespeare)" in out


def test_data_with_an_unknown_name_is_one_error_line_listing_the_names(capsys):
    rc, _, err = _cli(capsys, ["data", "fetch", "shakespeare"])
    assert rc == 2 and err.count("\n") == 1 and "'tinyshakespeare'" in err and "got 'shakespeare'" in err


def test_classify_names_dataset_comes_from_the_registry(tmp_path, monkeypatch):
    shared_data("classification/names")
    monkeypatch.setenv("UNROLLED_DATA", str(tmp_path))
    monkeypatch.setenv("UNROLLED_DATA_MIRROR", str(SHARED_DATA))
    from unrolled.apps.classify.sequences import load_builtin, load_text_folder

    ds = load_builtin("names")
    direct = load_text_folder(SHARED_DATA / "classification" / "names")
    assert len(ds.classes) == 18 and len(ds.items) == 20050  # every line of the 18 files, repeats too
    assert ds.items == direct.items and ds.classes == direct.classes  # the licence file is no class
    assert (tmp_path / "names" / "Vietnamese.txt").is_file()


def test_forecast_registry_series_load_as_their_csv_with_a_seasonal_period(tmp_path, monkeypatch):
    shared_data("timeseries/airline-passengers.csv")
    monkeypatch.setenv("UNROLLED_DATA", str(tmp_path))
    monkeypatch.setenv("UNROLLED_DATA_MIRROR", str(SHARED_DATA))
    from unrolled.apps.forecast.timeseries import load_builtin

    ts = load_builtin("airline-passengers")
    assert ts.values.shape == (144, 1) and ts.columns == ["Passengers"] and ts.period == 12
    assert ts.time[:2] == ["1949-01", "1949-02"] and ts.values[0, 0] == 112
    sun = load_builtin("monthly-sunspots")
    assert sun.values.shape == (2820, 1) and sun.time[-1] == "1983-12" and sun.values[0, 0] == 58.0
