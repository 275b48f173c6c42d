"""The unprivileged uid a grading process's sandboxes run as: one of its own on this machine.

The process cap (RLIMIT_NPROC, `instructor.grade.sandbox.Caps.processes`) counts every process of a uid on the
machine, not of one sandbox. Two graders sharing a uid would share one cap, so a fork bomb in one hand-in would
starve the other's, whether the two are workers of one ``grade --jobs N``, two ``grade`` commands started side by
side, or two Slurm array tasks (of one job or of two) on one node.

`claim` therefore takes the first uid of ``FIRST .. FIRST + SPAN - 1`` whose lock file no other process holds
(``/run/workbook-grade-uids/<uid>.lock``, in a folder only root can write), with an exclusive ``flock``
(filelock) held until the process ends: the kernel drops it when the process dies, ``kill -9`` included, so a
crashed grader never keeps its uid. The lock files stay, empty, for the next claim.
Only a grader run as root claims: another user's sandboxes run as that user, whose process cap is its own.
"""
import os
import stat
from pathlib import Path

from filelock import FileLock, Timeout

from instructor.grade.sandbox import SandboxMissing

FIRST, SPAN = 60000, 5000
FOLDER = Path("/run/workbook-grade-uids")
_held: dict[int, FileLock] = {}   # the claims of this process, held while it lives


class NoFreeUid(SandboxMissing):
    """Every uid of the range is claimed by a running grader."""


def _folder() -> Path:
    """``/run/workbook-grade-uids``, checked to be root's own folder: /run is root's alone to write (unlike the
    world-writable /run/lock or /tmp, where another user could make the folder first and hold or delete the locks),
    and one folder for the whole machine (unlike $TMPDIR, which Slurm may set per job)."""
    folder = FOLDER
    try:
        folder.mkdir(mode=0o755, exist_ok=True)
        status = os.lstat(folder)
    except OSError as error:
        raise NoFreeUid(f"{folder} cannot be made ({error.strerror}), so no sandbox uid can be claimed: grade as "
                        "root on a machine with a writable /run.") from None
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != 0 or status.st_mode & 0o022:
        raise NoFreeUid(f"{folder} is not a folder of root's that only root can write, so its uid locks cannot be "
                        "trusted: remove it (the grader makes it again).")
    return folder


def claim() -> int:
    """A sandbox uid no other running process of this machine has claimed; this process keeps it until it ends.

    Run as another user than root, the sandbox runs as that user (in a user namespace), whose own uid this is:
    nothing is claimed."""
    if os.geteuid() != 0:
        return os.geteuid()
    if _held:
        return next(iter(_held))
    folder = _folder()
    for uid in range(FIRST, FIRST + SPAN):
        lock = FileLock(folder / f"{uid}.lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            continue
        _held[uid] = lock
        return uid
    raise NoFreeUid(f"all {SPAN} sandbox uids {FIRST} to {FIRST + SPAN - 1} are claimed by running graders (their "
                    f"locks are in {folder}): wait for some to end, or grade with fewer --jobs.")
