"""Subjects: thin adapters that let the suites judge a client they did not write.

    from harness.subjects import resolve, SubjectConfig
    subject = resolve("openai").build(SubjectConfig("http://127.0.0.1:1234", model="qwen/qwen3-4b"))

See ``harness.subjects.base`` for the contract and ``harness.subjects.registry`` for names.
"""

from harness.subjects.base import (
    CAPABILITIES,
    Answer,
    Subject,
    SubjectConfig,
    SubjectError,
    acollect,
    check_subject,
    collect,
    missing_capabilities,
)
from harness.subjects.registry import ENTRY_POINT_GROUP, SubjectSpec, available, resolve

__all__ = [
    "CAPABILITIES", "ENTRY_POINT_GROUP", "Answer", "Subject", "SubjectConfig", "SubjectError",
    "SubjectSpec", "acollect", "available", "check_subject", "collect", "missing_capabilities",
    "resolve",
]
