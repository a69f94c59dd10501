"""Tests written to kill the review modules' surviving mutants (docs/mutation.md).

Each one pins a behaviour the existing tests let drift: the line numbers a location parses to
(not only whether two locations match), the fix priority a merge keeps (by rank, not by the
enum's string order), the similarity recorded for a member as it joined, alpha's default level,
and phi on the smallest vectors it is defined for.
"""

from __future__ import annotations

import pytest

from harness.review.aggregate import (
    _locations_relation,
    _specificity,
    _strength_key,
    merge_findings,
    merge_strengths,
    parse_location,
)
from harness.review.agreement import krippendorff_alpha, phi
from harness.review.models import Finding, Priority, Severity


@pytest.mark.parametrize(("text", "path", "start", "end"), [
    ("llm/client.py:320", "llm/client.py", 320, 320),
    ("./A.py:10-20", "a.py", 10, 20),
    ("`a.py` line ~180", "a.py", 180, 180),
    ("a.py", "a.py", None, None),
    ("a.py (around line 42)", "a.py", 42, 42),  # the line named later in the text
])
def test_a_location_parses_to_its_path_and_line_range(text: str, path: str, start: int | None,
                                                      end: int | None) -> None:
    location = parse_location(text)
    assert location is not None
    assert (location.path, location.start, location.end) == (path, start, end)


def finding(title: str, severity: Severity, priority: Priority | None = None,
            location: str | None = "a.py:10") -> Finding:
    return Finding(severity=severity, title=title, priority=priority, location=location)


def test_a_merge_keeps_the_most_urgent_priority_by_rank() -> None:
    """"nice_to_have" > "high" > "critical" as strings: only the rank gets this right."""
    merged = merge_findings(
        [("r1", [finding("Retry storm on 429", Severity.MAJOR, Priority.HIGH)]),
         ("r2", [finding("Retry storm on 429", Severity.MAJOR, Priority.NICE_TO_HAVE)])],
        panel_size=2)
    assert len(merged) == 1 and merged[0].priority is Priority.HIGH
    merged = merge_findings(
        [("r1", [finding("Retry storm on 429", Severity.MAJOR, Priority.CRITICAL)]),
         ("r2", [finding("Retry storm on 429", Severity.MAJOR, Priority.HIGH)])],
        panel_size=2)
    assert merged[0].priority is Priority.CRITICAL


def test_a_joining_member_records_its_similarity_to_one_decimal() -> None:
    merged = merge_findings(
        [("r1", [finding("Retries ignore the Retry-After header", Severity.MAJOR)]),
         ("r2", [finding("Retry-After header ignored by retries!", Severity.MAJOR)])],
        panel_size=2)
    assert len(merged) == 1
    first, joined = merged[0].sources
    assert first.similarity is None
    assert joined.similarity == 89.2  # token-set ratio 89.189...


def test_alpha_defaults_to_the_nominal_level() -> None:
    units = [[1, 1], [1, 2], [2, 3], [3, 3], [1, 3]]
    nominal = krippendorff_alpha(units, "nominal")
    assert krippendorff_alpha(units) == nominal == pytest.approx(0.15625)
    assert krippendorff_alpha(units, "ordinal") != nominal


def test_phi_is_defined_for_two_observations() -> None:
    assert phi([0, 1], [0, 1]) == pytest.approx(1.0)
    assert phi([0, 1], [1, 0]) == pytest.approx(-1.0)
    assert phi([1], [1]) is None and phi([0, 1], [0, 1, 1]) is None


def test_far_apart_lines_of_one_file_are_different_locations() -> None:
    assert _locations_relation("a.py:10", "a.py:500", 5) == "different"
    assert _locations_relation("a.py:500", "a.py:10", 5) == "different"
    assert _locations_relation("a.py:10", "a.py:14", 5) == "same"


def test_a_location_with_a_line_is_more_specific_than_a_longer_one_without() -> None:
    assert _specificity("a.py:10") > _specificity("harness/review/a_much_longer_path.py")
    assert _specificity("a.py:10") == (True, 7)
    assert _specificity("a.py") == (False, 4)


def test_alpha_of_a_single_pair_that_disagrees_is_zero() -> None:
    assert krippendorff_alpha([[1, 2]]) == 0.0


def test_alpha_whose_expected_disagreement_is_exactly_one() -> None:
    assert krippendorff_alpha([[0, 0, 0.5]], "interval") == 0.0


def test_ordinal_alpha_orders_string_categories_by_their_text() -> None:
    # first seen c, a, b: sorted order a < b < c decides the ordinal distances
    units = [["c", "a"], ["a", "b"], ["b", "b"], ["c", "c"]]
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.148333, abs=1e-6)


def test_ordinal_alpha_puts_numbers_before_labels() -> None:
    units = [[1, "high"], [2, "high"], [1, 1]]
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.194444, abs=1e-6)


def test_a_location_without_a_line_is_the_same_place_as_any_line_of_its_file() -> None:
    assert _locations_relation("a.py", "a.py:10", 5) == "same"
    assert _locations_relation("a.py:10", "a.py", 5) == "same"


def test_the_line_window_is_inclusive_at_both_ends() -> None:
    assert _locations_relation("a.py:20", "a.py:15", 5) == "same"
    assert _locations_relation("a.py:15", "a.py:20", 5) == "same"
    assert _locations_relation("a.py:21", "a.py:15", 5) == "different"


def test_a_path_keeps_its_letters_when_dots_and_slashes_are_stripped() -> None:
    location = parse_location("./XML.py:3")
    assert location is not None and location.path == "xml.py"


def test_a_merge_takes_the_most_specific_location_not_the_greatest_text() -> None:
    merged = merge_findings(
        [("r1", [finding("Parser drops the last line", Severity.MAJOR,
                         location="a.py (the parser)")]),
         ("r2", [finding("Parser drops the last line", Severity.MAJOR,
                         location="`a.py` line 12")])],
        panel_size=2)
    assert len(merged) == 1 and merged[0].location == "`a.py` line 12"


def test_a_merge_without_any_impact_has_an_empty_one() -> None:
    merged = merge_findings(
        [("r1", [finding("Parser drops the last line", Severity.MAJOR)]),
         ("r2", [finding("Parser drops the last line", Severity.MAJOR)])],
        panel_size=2)
    assert merged[0].impact == ""


@pytest.mark.parametrize(("text", "key"), [
    ("Clean architecture: layered and small", "clean architecture"),
    ("Fast: really: yes", "fast"),
    ("x" * 85 + ": tail", "x" * 85 + "  tail"),  # a colon past the headline is text
    ("x" * 80 + ":y", "x" * 80 + " y"),  # the 81st character is past the headline
])
def test_a_strength_is_compared_on_its_headline(text: str, key: str) -> None:
    assert _strength_key(text) == key


def test_unrelated_strengths_stay_apart_and_the_most_noted_come_first() -> None:
    merged = merge_strengths(
        [("r1", ["Clear error messages"]),
         ("r2", ["Thorough property-based tests", "Clear error messages"])],
        panel_size=2)
    assert [m.support for m in merged] == [2, 1]
    assert merged[0].text == "Clear error messages" and merged[0].noted_by == ["r1", "r2"]
