"""The gradebook: `merge(GRADES)` turns GRADES/results/*.json into grades.csv and index.html.

- grades.csv: one row per student (sorted by name), one column per exercise in points (its maximum in the
  header), one per written answer ("to grade" or "missing"), the total, and a status ("graded", or the refusal).
  Nothing in it depends on when or where a hand-in was graded, so a local run and a Slurm array give the same
  bytes; it uploads to an LMS as it is.
- index.html: the class page. One row per student: the marks per exercise, the total, the missing
  deliverables, the failed checks' feedback (hidden ones included), the tampering notes, and a link to the
  student's report (reports/<name>/index.html). Every string from a submission is escaped (html.escape) and
  the page carries a Content-Security-Policy that forbids every script (default-src 'self'; script-src 'none').

A result file that cannot be read becomes a row saying so; merge never stops on one student.

Why files and not nbgrader's gradebook.db: each result is written once, atomically, by the one process that graded
that hand-in (a local worker or a Slurm array task on any node), so there is no shared writer to lock: SQLite over
NFS is what its own documentation warns against, and a server is one more thing to run. The merge is a pure
function of the files, so the local run and the array give byte-identical CSVs, `--only NAME` replaces one file,
and a diff shows what a re-grade changed. nbgrader's gradebook would bring formgrader for written answers, but it
models grades per notebook cell of nbgrader's own assignment layout (source/release/submitted, checksummed grade
cells); this course grades helpers files per exercise from its own hand-in archive (helpers.handin), so it would
need a translation layer for little gain: the written answers are "to grade" in the CSV, their text in each
result file, for the instructor to mark in the LMS.
"""
import csv
import html
import io
import json
from pathlib import Path

from helpers.exercises import EXERCISES
from helpers.foundation.atomic import write_atomic

CSP = "default-src 'self'; script-src 'none'"
STYLE = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;
padding:3px 6px;vertical-align:top;font-size:13px}th{background:#f3f3f3}.full{background:#dff5df}
.part{background:#fff3cd}.zero{background:#f8d7da}.note{color:#8a1c1c}ul{margin:0;padding-left:1.2em}
td.fb{max-width:40em}"""


def load(grades: Path) -> list[dict]:
    """Every result file, sorted by student; an unreadable one becomes a stub row naming the problem."""
    rows = []
    for path in sorted((grades / "results").glob("*.json")):
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("exercises"), dict):
                raise ValueError("not a result")
        except (OSError, ValueError) as error:
            data = {"student": path.stem, "exercises": {}, "refused": f"its result file cannot be read ({error})"}
        rows.append(data)
    return sorted(rows, key=lambda r: str(r.get("student")))


def _maxima(rows: list[dict]) -> dict[str, int]:
    found = {}
    for row in rows:
        for key, value in row.get("exercises", {}).items():
            found[key] = max(found.get(key, 0), int(value.get("max", 0)))
    return found


def _written_ids(rows: list[dict]) -> list[str]:
    ids = []
    for row in rows:
        for answer in row.get("written", []):
            if answer.get("id") not in ids:
                ids.append(answer.get("id"))
    return ids


def csv_text(rows: list[dict]) -> str:
    keys, maxima, written = [e.key for e in EXERCISES], _maxima(rows), _written_ids(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["student", *(f"exercise {k} [{maxima.get(k, 0)}]" for k in keys),
                     *(f"written {w}" for w in written), f"total [{sum(maxima.values())}]", "status"])
    for row in rows:
        exercises = row.get("exercises", {})
        answers = {a.get("id"): a.get("status", "missing") for a in row.get("written", [])}
        points = [exercises.get(k, {}).get("points", 0) for k in keys]
        status = "graded" if not row.get("refused") else f"refused: {row['refused']}"
        writer.writerow([row.get("student"), *points, *(answers.get(w, "missing") for w in written), sum(points),
                         status])
    return out.getvalue()


def _cell(exercise: dict) -> str:
    points, most = exercise.get("points", 0), exercise.get("max", 0)
    kind = "full" if most and points == most else ("zero" if not points else "part")
    title = html.escape(str(exercise.get("feedback", "")), quote=True)
    return f'<td class={kind} title="{title}">{points}/{most}</td>'


def _feedback(row: dict) -> str:
    """The failed checks of a row: the visible check's sentence, or each failed hidden check's."""
    items = []
    for key, exercise in row.get("exercises", {}).items():
        if exercise.get("passed"):
            continue
        visible = exercise.get("visible") or {}
        failed = [c for c in exercise.get("hidden") or [] if not c.get("passed")]
        if visible.get("passed") and failed:
            items += [f"<li><b>{html.escape(key)}</b> hidden {html.escape(str(c.get('name', '')).replace('_', ' '))}: "
                      f"{html.escape(str(c.get('feedback', '')))}</li>" for c in failed]
        else:
            items.append(f"<li><b>{html.escape(key)}</b> {html.escape(str(exercise.get('feedback', '')))}</li>")
    return f"<ul>{''.join(items)}</ul>" if items else "✓"


def _list(values, kind: str = "") -> str:
    if not values:
        return ""
    items = "".join(f"<li>{html.escape(str(v))}</li>" for v in values)
    return f"<details><summary>{len(values)}</summary><ul class='{kind}'>{items}</ul></details>"


def page(rows: list[dict], grades: Path) -> str:
    keys, maxima = [e.key for e in EXERCISES], _maxima(rows)
    head = "".join(f"<th>{html.escape(k)}<br>[{maxima.get(k, 0)}]</th>" for k in keys)
    body = []
    for row in rows:
        name = str(row.get("student"))
        report = grades / "reports" / name / "index.html"
        who = (f'<a href="reports/{html.escape(name, quote=True)}/index.html">{html.escape(name)}</a>'
               if report.exists() else html.escape(name))
        exercises = row.get("exercises", {})
        marks = "".join(_cell(exercises[k]) if k in exercises else "<td></td>" for k in keys)
        total = sum(exercises.get(k, {}).get("points", 0) for k in keys)
        refused = row.get("refused")
        notes = list(row.get("tampering", []))
        feedback = (f"<span class=note>refused: {html.escape(str(refused))}</span>" if refused else _feedback(row))
        written = ", ".join(f"{html.escape(str(a.get('id')))}: {html.escape(str(a.get('status')))}"
                            for a in row.get("written", []))
        body.append(f"<tr><td>{who}</td>{marks}<td><b>{total}</b></td><td>{_list(row.get('missing', []))}</td>"
                    f"<td>{written}</td><td class=fb>{feedback}</td><td class=note>{_list(notes, 'note')}</td></tr>")
    return (f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
            f'content="{CSP}"><title>Gradebook</title><link rel="stylesheet" href="style.css"></head><body>'
            f"<h1>Gradebook: {len(rows)} hand-ins</h1><p>Points per exercise (the check the student ran is worth 2, "
            f"each hidden check 1); hover a mark for its feedback. grades.csv holds the same marks for the LMS.</p>"
            f"<table><tr><th>student</th>{head}<th>total<br>[{sum(maxima.values())}]</th><th>missing deliverables</th>"
            f"<th>written answers</th><th>feedback (failed checks, hidden included)</th><th>tampering</th></tr>"
            + "\n".join(body) + "</table></body></html>\n")


def merge(grades: Path) -> Path:
    """Write grades.csv, index.html and style.css into `grades` from its results/; return grades.csv's path."""
    grades = Path(grades)
    rows = load(grades)
    with write_atomic(grades / "grades.csv") as handle:
        handle.write(csv_text(rows))
    with write_atomic(grades / "style.css") as handle:
        handle.write(STYLE)
    with write_atomic(grades / "index.html") as handle:
        handle.write(page(rows, grades))
    return grades / "grades.csv"
