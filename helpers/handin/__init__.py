"""Handing in: ``python -m helpers.handin`` (or ``hand_in()`` in the last cell of a notebook) packs the executed
notebooks and the exercise files into one archive; `helpers.handin.archive` defines its format, which the
instructor's grader reads."""
from helpers.handin.pack import hand_in

__all__ = ["hand_in"]
