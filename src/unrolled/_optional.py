"""Optional dependencies: how to install one, and a check a command runs *before* its long work starts.

unrolled is installed from a clone (``pip install -e .``); its extras are not published on a package index,
so ``pip install 'unrolled[plot]'`` would look for a registry name that does not exist. Every hint therefore
gives the clone form, and the plain package as the alternative.
"""

from __future__ import annotations

import importlib.util


def install_hint(extra: str, package: str) -> str:
    """``pip install -e ".[EXTRA]"`` (in the unrolled clone) or ``pip install PACKAGE``."""
    return f'pip install -e ".[{extra}]" in the unrolled clone, or pip install {package}'


def is_installed(module: str) -> bool:
    """Whether the top-level `module` can be imported, found without importing it (matplotlib or
    statsmodels take seconds to import; a check before the work must be cheap)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed package
        return False


def require(what: str, module: str, extra: str, package: str | None = None) -> None:
    """Raise ImportError ``"<what> needs <package>: <install hint>"`` unless `module` is installed.

    what : the feature that needs it, as the user asked for it ("--plot", "the ARIMA baseline").
    module : the top-level module to find.  extra : the pyproject extra that installs it.
    package : its name on the package index (default: `module`).
    """
    package = package or module
    if not is_installed(module):
        raise ImportError(f"{what} needs {package}: {install_hint(extra, package)}")
