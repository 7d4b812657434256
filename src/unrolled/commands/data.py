"""``unrolled data list | info NAME | fetch NAME [--verify]``: the public datasets of the documentation
(:mod:`unrolled.datasets`), downloaded once into a cache and verified.

``fetch`` prints the local path, and nothing else, on stdout, so that a shell can use it:
``unrolled train charlm --text "$(unrolled data fetch tinyshakespeare)"``; what it did goes to stderr.
"""

from __future__ import annotations

import argparse

from unrolled import datasets


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "data",
        help="the public datasets of the README: list them, show one, download one (once, verified)",
        description="The public datasets the documentation's results use: each file's URL, size, SHA-256, "
        "licence and citation. A download goes once into the cache ($UNROLLED_DATA, else "
        "$XDG_CACHE_HOME/unrolled, else ~/.cache/unrolled), is checked against its SHA-256 and resumes "
        "where it stopped; $UNROLLED_DATA_MIRROR (a URL or a folder) replaces the upstream URLs.",
    )
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="every dataset: size, whether it is in the cache, what it is")
    ls.set_defaults(func=run_list)
    inf = sub.add_parser("info", help="one dataset: files, URLs, SHA-256, licence, citation, local path")
    inf.add_argument("name", metavar="NAME", help="a dataset name (see 'unrolled data list')")
    inf.set_defaults(func=run_info)
    f = sub.add_parser(
        "fetch",
        help="download a dataset into the cache (once, verified) and print its local path",
        description="Download NAME into the cache unless it is there, verify it, and print its local path "
        "(the file, or the folder of a several-file dataset) on stdout.",
    )
    f.add_argument("name", metavar="NAME", help="a dataset name (see 'unrolled data list')")
    f.add_argument("--verify", action="store_true", help="re-hash files already in the cache")
    f.set_defaults(func=run_fetch)


def _size(n: int) -> str:
    """Bytes for a reader: 2.1 KiB, 1.1 MiB."""
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _local(name: str) -> str | None:
    """The dataset's local path if it is fully in the cache, else None (no network)."""
    try:
        return str(datasets.path(name))
    except FileNotFoundError:
        return None


def run_list(args: argparse.Namespace) -> int:
    rows = [
        (d.name, _size(d.size), "yes" if _local(d.name) else "no", d.description)
        for d in datasets.DATASETS.values()
    ]
    w = [max(len(r[k]) for r in [("name", "size", "cached", ""), *rows]) for k in range(3)]
    print(f"{'name':<{w[0]}}  {'size':>{w[1]}}  {'cached':<{w[2]}}  what")
    for name, size, cached, what in rows:
        print(f"{name:<{w[0]}}  {size:>{w[1]}}  {cached:<{w[2]}}  {what}")
    print(f"\ncache: {datasets.default_cache_dir()}; download one with: unrolled data fetch NAME")
    return 0


def run_info(args: argparse.Namespace) -> int:
    d = datasets.info(args.name)
    local = _local(d.name)
    print(f"{d.name}: {d.description}")
    print(f"licence:  {d.licence}")
    print(f"citation: {d.citation}")
    print(f"local:    {local or f'not downloaded (unrolled data fetch {d.name})'}")
    print(f"files:    {len(d.files)}, {d.size:,} bytes")
    for f in d.files:
        print(f"  {f.name}  {f.size:,} bytes  sha256 {f.sha256}\n    {f.url}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    print(datasets.fetch(args.name, verify=args.verify))
    return 0
