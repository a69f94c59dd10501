"""Screenshots of a load report (or any page) at a phone's and a desktop's width, in headless
Chromium, to look at: ``report-390.png`` and ``report-1400.png`` beside the page.

    .venv/bin/python benchmarks/screenshot_report.py reports/out/load/concurrency-sweep/report.html

Needs a ``chromium`` binary (``apt-get install -y chromium``); nothing is downloaded at run time.
The page is loaded from disk with the network off.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

WIDTHS = (390, 1400)
HEIGHT = 5000  # tall enough for the whole report: a screenshot is of the window only


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no chromium binary found (apt-get install -y chromium)")


def shoot(page: Path, width: int, out: Path) -> None:
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--hide-scrollbars", f"--window-size={width},{HEIGHT}",
         f"--screenshot={out}", page.resolve().as_uri()],
        check=True, capture_output=True, timeout=120)


def main() -> None:
    for arg in sys.argv[1:] or ["reports/out/load/concurrency-sweep/report.html"]:
        page = Path(arg)
        for width in WIDTHS:
            out = page.with_name(f"{page.stem}-{width}.png")
            shoot(page, width, out)
            print(out)


if __name__ == "__main__":
    main()
