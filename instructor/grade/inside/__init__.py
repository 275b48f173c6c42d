"""What runs INSIDE the grading sandbox, and the wire format both sides share.

This folder is the only part of `instructor/` that a sandbox sees (bound read-only at /grade/inside): the
runner that drives a student's code, the recorder around it, the vocabulary of small test callables the
hidden cases name, and the wire format. It imports nothing from `instructor` and holds no reference solution,
no expected value and no hidden check's verdict: those stay outside, in `instructor.grade`.
"""
