"""Write the blocking shell ``sync.py`` from the asyncio shell ``aio.py``, its source:
``python -m harness.client._generate`` (``--check``: only say whether ``sync.py`` is current,
exit status 1 if not; ``tests/client/test_generated_shells.py`` runs the same comparison).

The way httpcore does it: write the async code, generate the sync code, check the generated
file in CI. The rewrite is ``unasync`` (python-trio's token-level tool): it drops ``async`` and
``await``, turns ``async for``/``async with``/``async def`` into their plain forms, renames the
async dunders and ``AsyncIterator`` and friends, and the names in ``RENAMES``. It rewrites
code tokens only: docstrings and comments are copied as they are, so ``aio.py``'s prose is
written for both shells. What cannot be renamed away (sleeping, how ``switch_model`` cuts a
call off, the default transport) lives in ``_backend_async.py`` / ``_backend_sync.py``.

Needs the dev extra (``unasync``); nothing at run time imports this module.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "aio.py"
TARGET = HERE / "sync.py"

#: The rename table, whole: what ``aio.py`` uses of unasync's own table (``__aenter__`` ->
#: ``__enter__``, ...) and ours. unasync would turn an ``AsyncX`` missing here into ``SyncX``;
#: ``test_generated_shells`` fails on such a name, and compares the two files token by token
#: through this table (without unasync), so it stays whole.
RENAMES = {
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "AsyncIterator": "Iterator",
    "StopAsyncIteration": "StopIteration",
    "AsyncClient": "Client",  # ours, and httpx's
    "AsyncChatStream": "ChatStream",
    "AsyncBaseTransport": "BaseTransport",  # httpx's
    "_backend_async": "_backend_sync",
    "aclose": "close",
    "aiter_raw": "iter_raw",  # httpx.Response's
    "afetch": "fetch",  # ModelCatalog's
}

HEADER = (
    "# Generated from harness/client/aio.py by `python -m harness.client._generate`;"
    " do not edit.\n"
    "# Edit aio.py, then regenerate. The shells' real differences: _backend_async.py and\n"
    "# _backend_sync.py.\n"
)


def generate(source: str | None = None) -> str:
    """The text ``sync.py`` must have, made from ``source`` (``aio.py``'s text by default)."""
    import unasync  # the dev extra's; imported here so RENAMES can be read without it

    text = SOURCE.read_text(encoding="utf-8") if source is None else source
    # unasync works on files under a directory named by its rule: run it on a copy.
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "_async", "shell.py")
        src.parent.mkdir()
        src.write_text(text, encoding="utf-8")
        rule = unasync.Rule("/_async/", "/_sync/", additional_replacements=RENAMES)
        unasync.unasync_files([str(src)], rules=[rule])
        generated = Path(tmp, "_sync", "shell.py").read_text(encoding="utf-8")
    return HEADER + generated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.client._generate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if sync.py is not what aio.py generates")
    args = parser.parse_args(argv)
    wanted = generate()
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else None
    if args.check:
        if current != wanted:
            print(f"{TARGET} is stale: run python -m harness.client._generate", file=sys.stderr)
            return 1
        print(f"{TARGET} is current")
        return 0
    if current != wanted:
        TARGET.write_text(wanted, encoding="utf-8")
        print(f"wrote {TARGET}")
    else:
        print(f"{TARGET} already current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
