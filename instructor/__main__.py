"""The instructor's command line: ``python -m instructor <verb> [options]`` (``--help`` after a verb for its own).

    student   write the student edition (exercises stubbed, check cells added)       instructor.edition
    render    execute notebooks and write the report (``--report-only``: no execution) instructor.execute
    badges    rewrite (or ``--check``) the notebooks' Colab badges and set-up cells     instructor.badges
    sample    sample a trained run to a file                                           instructor.sample
    release   write the student release as its own git repository                     instructor.release
    grade     grade a folder of hand-ins in sandboxes, in parallel, into a gradebook    instructor.grade.cli
    grade-one grade one hand-in (what each parallel worker or Slurm task runs)         instructor.grade.one
    grade-slurm  grade a folder of hand-ins as a Slurm job array, then merge           instructor.grade.slurm
"""
import importlib
import sys

VERBS = {"student": "instructor.edition", "render": "instructor.execute", "badges": "instructor.badges",
         "sample": "instructor.sample", "release": "instructor.release", "grade": "instructor.grade.cli",
         "grade-one": "instructor.grade.one", "grade-slurm": "instructor.grade.slurm"}


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in VERBS:
        given = f"unknown verb {argv[0]!r}; " if argv and not argv[0].startswith("-") else ""
        sys.exit(f"{given}usage: python -m instructor {{{','.join(VERBS)}}} [options]\n{__doc__}")
    verb, rest = argv[0], argv[1:]
    module = importlib.import_module(VERBS[verb])
    module.main(rest)


if __name__ == "__main__":
    main()
