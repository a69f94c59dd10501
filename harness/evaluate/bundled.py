"""Where the suites, the locustfile and the fixtures are, in a checkout or a wheel install.

The wheel carries ``suites/`` as ``harness.suites`` and ``fixtures/`` as ``harness.fixtures``
(see setup.py); a checkout (editable install) has them next to the package. Either way these
functions return real directories, so ``harness evaluate`` and
``locust -f "$(python -m harness.evaluate.bundled locustfile)"`` work outside a checkout.

``python -m harness.evaluate.bundled suites|locustfile|fixtures`` prints the path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _bundled(package: str, folder: str) -> Path | None:
    """The installed copy, else the checkout's folder next to the package."""
    import harness

    for path in (_package_dir(package), Path(harness.__file__).resolve().parent.parent / folder):
        if path is not None and path.is_dir():
            return path.resolve()
    return None


def suites_dir() -> Path | None:
    return _bundled("harness.suites", "suites")


def fixtures_dir() -> Path | None:
    return _bundled("harness.fixtures", "fixtures")


def locustfile() -> Path | None:
    suites = suites_dir()
    path = suites / "load" / "locustfile.py" if suites else None
    return path if path is not None and path.is_file() else None


def main(argv: list[str]) -> int:
    what = {"suites": suites_dir, "locustfile": locustfile, "fixtures": fixtures_dir}
    if len(argv) != 1 or argv[0] not in what:
        print(f"usage: python -m harness.evaluate.bundled {'|'.join(what)}", file=sys.stderr)
        return 2
    path = what[argv[0]]()
    if path is None:
        print(f"no {argv[0]} found in this installation", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
