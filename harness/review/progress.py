"""Live progress per reviewer (tokens and tokens/s), drawn by rich on stderr."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from harness.reporting.terminal import console as safe_console
from harness.reporting.terminal import term


class ReviewProgress:
    """One line per reviewer; ``update`` is the runner's progress hook."""

    def __init__(self, names: list[str], console: Console | None = None) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<20}"),
            TextColumn("{task.fields[tokens]:>6} tokens"),
            TextColumn("{task.fields[rate]:>7} tok/s"),
            TimeElapsedColumn(),
            console=console or safe_console(stderr=True),
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {
            name: self._progress.add_task(term(name), total=None, tokens=0, rate="-")
            for name in names
        }

    def update(self, name: str, tokens: int, elapsed: float) -> None:
        task = self._tasks.get(name)
        if task is None:
            return
        rate = f"{tokens / elapsed:.1f}" if elapsed > 0 else "-"
        self._progress.update(task, tokens=tokens, rate=rate)

    def __enter__(self) -> ReviewProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()
