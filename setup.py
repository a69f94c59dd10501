"""Packaging that pyproject.toml cannot say: the suites and fixtures ship inside the wheel.

Why: ``harness evaluate`` and ``locust -f`` must work where the harness was installed from a
wheel, without a checkout. The repository keeps one copy of each (``suites/``, ``fixtures/``);
the wheel maps them to ``harness.suites`` and ``harness.fixtures`` (the same layout relative to
each other, so a suite's ``parents[1] / "fixtures"`` works in both). Everything else is in
pyproject.toml.
"""

from setuptools import find_packages, setup

BUNDLED = {"harness.suites": "suites", "harness.suites.load": "suites/load",
           "harness.fixtures": "fixtures"}

setup(
    packages=[*find_packages(include=["harness", "harness.*"]), *BUNDLED],
    package_dir=BUNDLED,
    package_data={
        "harness": ["**/templates/*", "**/templates/**/*", "**/*.toml", "**/*.json", "py.typed"],
        "harness.suites": ["*.py"],
        "harness.suites.load": ["*.py"],
        "harness.fixtures": ["*.md", "**/*.json", "**/*.toml", "**/*.py", "**/*.yaml",
                             "**/*.md", "**/*.diff", "**/*.txt"],
    },
    exclude_package_data={"": ["__pycache__/*", "*.pyc"]},
)
