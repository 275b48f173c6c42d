"""Points: each exercise is scored on its own, from its visible check and its hidden cases.

The visible check (the one the student ran) is worth `VISIBLE` points and each hidden case `HIDDEN` point, so an
unfinished exercise costs exactly its own points and a half-right one keeps the cases it passes. The feedback is
one sentence: the visible check's own when it fails, else the first failing hidden case's, else a tick.
"""
from helpers.exercises import BY_KEY

VISIBLE, HIDDEN = 2, 1


def exercise(key: str, visible: tuple[bool, str], cases: list[tuple[str, bool, str]]) -> dict:
    """The result of exercise `key`: points, max, passed, one feedback sentence, and each verdict."""
    if visible is None:
        visible = (False, "the visible check was not run")
    points = VISIBLE * visible[0] + HIDDEN * sum(passed for _, passed, _ in cases)
    most = VISIBLE + HIDDEN * len(cases)
    failed = [(name, sentence) for name, passed, sentence in cases if not passed]
    if not visible[0]:
        feedback = visible[1]
    elif failed:
        feedback = f"hidden check {failed[0][0].replace('_', ' ')}: {failed[0][1]}"
    else:
        feedback = f"✓ the check you ran and {len(cases)} hidden checks pass"
    return {"title": BY_KEY[key].title, "points": points, "max": most, "passed": points == most,
            "feedback": feedback,
            "visible": {"passed": visible[0], "feedback": visible[1]},
            "hidden": [{"name": name, "passed": passed, "feedback": sentence} for name, passed, sentence in cases]}
