"""The verdict in words, as the sweep's closing lines and report.md print it."""

from search.report import verdict_state

CHECKED = {"found": False, "near_task": True, "checked": True, "failed_controls": ["full_swap"]}


def test_each_verdict_has_its_words():
    assert verdict_state({**CHECKED, "found": True, "failed_controls": []}) == "found"
    assert verdict_state({**CHECKED, "near_task": False}) == "not found (below task accuracy)"
    assert verdict_state(CHECKED) == "not found (not above full_swap)"
    unchecked = verdict_state({**CHECKED, "checked": False, "failed_controls": []})
    assert unchecked == "unchecked (no control ran; set controls.top_k >= 1)"
