"""The sandbox every submission's code runs in: bubblewrap (Debian's ``bubblewrap``), with rlimits by ``prlimit``.

Why bubblewrap: it is the tool Flatpak runs untrusted apps with, it is one small setuid-free binary in Debian,
needs no daemon (Docker) or image, starts in milliseconds, and its protection is exactly the mounts and
namespaces its arguments name, so the whole policy is the list `command` builds and can be read in one place.
nsjail and isolate would add seccomp and cgroups but are not packaged in Debian; systemd-run needs a running
systemd, which containers and Slurm nodes often lack.

What the sandbox is (`command`):

- namespaces: its own PID namespace (``--unshare-pid``: killing bubblewrap, which `Sandbox.kill` does, ends every
  process the submission started, background ones included), network (``--unshare-net``: only a loopback of
  its own), IPC, UTS and cgroup; ``--die-with-parent``, ``--new-session`` (no terminal to inject into);
- file system: the host's root read-only (``--ro-bind / /``); an empty read-only tmpfs over the repository (its
  reference solutions and the hidden checks), the gradebook, the hand-ins, /home, /root, /work, /run (munge's
  and other daemons' sockets), /srv, /mnt, /media and /var/tmp, with only the Python installation bound back
  read-only; ``/tmp`` a fresh tmpfs of ``scratch_mib`` (the hand-in's scratch folder, the only writable place:
  it vanishes with the sandbox, so nothing a submission writes reaches the host); the runner, the task inputs,
  the released helpers and the student's exercise files bound read-only under /run/grade;
- user: as root, bubblewrap sets the sandbox up and ``setpriv`` drops to an unprivileged uid with no
  capabilities and ``no_new_privs`` before Python starts (each grading process claims a uid no other running
  grader holds, `instructor.grade.uids`, so the process cap counts its own sandbox alone); run as another
  user, bubblewrap's user namespace is used instead and the process cap is the user's own;
- caps (`Caps`), set by ``prlimit`` on the whole process tree: data segment (memory, per process), processes,
  open files, file size, CPU seconds, no core dumps; a clean environment (``--clearenv``) without GPUs.

Memory is capped per process (RLIMIT_DATA: torch maps too much address space for RLIMIT_AS), so a sandbox holds
at most `processes` x `memory_mib`; cgroups would cap the sum, but they are not portable: this machine mounts the
v1 hierarchy (its v2 'unified' mount has no controllers), containers rarely delegate them, and a Slurm task already
runs inside the cgroup of its --mem. The rlimits work wherever bubblewrap does.

The wall-time caps, the output cap (stdout and stderr, counted as they are read and drained so a flood never
blocks) and the result channel's cap are enforced by `Sandbox.run`, which kills the sandbox when one is passed.
When bubblewrap, prlimit or setpriv is missing, `unavailable` says so in one sentence and nothing runs.
"""
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

GRADE_HOME = "/run/grade"            # where the runner, the inputs and the student's package appear inside
HIDDEN = ("/home", "/root", "/work", "/run", "/srv", "/mnt", "/media", "/var/tmp")
TOOLS = ("bwrap", "prlimit", "setpriv")


@dataclass(frozen=True)
class Caps:
    """Per-hand-in limits. Memory is RLIMIT_DATA per process (torch alone needs about 1 GiB to import)."""
    exercise_s: float = 60.0        # wall time for one exercise (its import included), then it is killed
    handin_s: float = 600.0         # wall time for the whole hand-in, every restart included
    startup_s: float = 120.0        # wall time for the sandbox's Python to import torch and the released checks
    memory_mib: int = 2048
    processes: int = 128
    open_files: int = 256
    output_mib: float = 8.0         # stdout + stderr, all restarts together
    channel_mib: float = 64.0       # the result channel, per sandbox run
    scratch_mib: int = 256          # the writable /tmp (and the largest file)

    def describe(self) -> str:
        return (f"{self.exercise_s:g} s an exercise, {self.handin_s:g} s a hand-in, {self.memory_mib} MiB a process, "
                f"{self.processes} processes, {self.open_files} open files, {self.output_mib:g} MiB of output, "
                f"{self.scratch_mib} MiB of scratch")


DEFAULT_CAPS = Caps()


class SandboxMissing(RuntimeError):
    """Grading cannot run sandboxed here: one sentence (and nothing is run unsandboxed)."""


def unavailable() -> str | None:
    """Why submissions cannot be sandboxed on this machine, or None."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed, and a submission's code "
                "never runs outside its sandbox: install bubblewrap and util-linux (Debian: apt-get install "
                "bubblewrap util-linux) and grade again.")
    return None


@dataclass
class Layout:
    """What the sandbox sees besides the read-only host: read-only binds (host path -> path inside), the host
    paths to hide, and the command to run inside."""
    binds: list[tuple[Path, str]] = field(default_factory=list)
    hide: list[Path] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _python_paths() -> list[Path]:
    """The folders this Python needs (the environment and the installation it was made from), resolved."""
    paths = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent.parent}
    return sorted(paths)


def _hidden(layout: Layout) -> list[str]:
    """Top-most existing paths to hide: the layout's and the usual homes of data, sorted parents first."""
    paths = sorted({str(Path(p).resolve()) for p in [*layout.hide, *HIDDEN] if Path(p).exists()},
                   key=lambda p: (p.count("/"), p))
    top: list[str] = []
    for path in paths:
        if path in ("/", "/tmp") or any(path == t or path.startswith(t + "/") for t in top):
            continue
        top.append(path)
    return top


def _dirs(path: str, under: str) -> list[str]:
    """The folders between `under` (excluded) and `path` (excluded), each made 0755 so the uid can pass."""
    out, parts = [], Path(path).relative_to(under).parts
    for i in range(1, len(parts)):
        out += ["--perms", "0755", "--dir", str(Path(under, *parts[:i]))]
    return out


def command(layout: Layout, caps: Caps, uid: int, fd: int) -> list[str]:
    """The full argv: prlimit's caps, bubblewrap's namespaces and mounts, setpriv's unprivileged uid."""
    root = os.geteuid() == 0
    limits = ["prlimit", f"--nproc={caps.processes}", f"--nofile={caps.open_files}",
              f"--data={caps.memory_mib * 2**20}", f"--fsize={caps.scratch_mib * 2**20}", "--core=0",
              f"--cpu={int(caps.handin_s) + 1}", "--"]
    args = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "grade", "--ro-bind", "/", "/",
            "--proc", "/proc", "--dev", "/dev"]
    if root:
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--cap-drop", "ALL"]
    hidden = _hidden(layout)
    backs = [str(p) for p in _python_paths()]
    for path in hidden:
        args += ["--perms", "0755", "--tmpfs", path]
        for back in backs:
            if back.startswith(path + "/"):
                args += [*_dirs(back, path), "--ro-bind", back, back]
        if path == "/run":
            args += ["--perms", "0755", "--dir", GRADE_HOME]
            for source, target in sorted(layout.binds, key=lambda b: b[1]):
                args += [*_dirs(target, GRADE_HOME), "--ro-bind", str(source), target]
    if "/run" not in hidden:
        raise SandboxMissing("this machine has no /run folder to mount the grader's files under.")
    for path in hidden:
        args += ["--remount-ro", path]
    args += ["--perms", "01777", "--size", str(caps.scratch_mib * 2**20), "--tmpfs", "/tmp"]
    for back in backs:   # a Python environment that lives under /tmp (a checkout there) is bound back, read-only
        if back.startswith("/tmp/"):
            args += [*_dirs(back, "/tmp"), "--ro-bind", back, back]
    args += ["--clearenv"]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "PYTHONHASHSEED": "0",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "GRADE_HOME": GRADE_HOME, "GRADE_FD": str(fd), **layout.env}
    for name, value in sorted(env.items()):
        args += ["--setenv", name, value]
    drop = (["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
             "--bounding-set=-all", "--no-new-privs", "--"] if root else [])
    return [*limits, *args, "--", *drop, *layout.argv]


@dataclass
class Exit:
    """How a sandbox run ended: "end" (the runner said so), "died" (the process ended without it), "timeout",
    "output" (printed past the cap) or "channel" (the result channel broke its format or cap)."""
    reason: str
    detail: str = ""
    returncode: int | None = None
    output_bytes: int = 0
    stderr_tail: str = ""


class Sandbox:
    """One run of the sandbox; `run` feeds each frame to `on_frame` and enforces `deadline()` and the caps."""

    def __init__(self, layout: Layout, caps: Caps, uid: int, output_budget: int):
        self.layout, self.caps, self.uid, self.output_budget = layout, caps, uid, output_budget
        self.process: subprocess.Popen | None = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()

    def run(self, on_frame, deadline, reader) -> Exit:
        """Start, read until the runner's "end" frame or a cap; the sandbox is always dead on return."""
        read_fd, write_fd = os.pipe()
        argv = command(self.layout, self.caps, self.uid, write_fd)
        try:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, pass_fds=[write_fd], start_new_session=True)
        finally:
            os.close(write_fd)
        selector = selectors.DefaultSelector()
        channel = os.fdopen(read_fd, "rb", buffering=0)
        for stream, name in ((channel, "channel"), (self.process.stdout, "stdout"), (self.process.stderr, "stderr")):
            os.set_blocking(stream.fileno(), False)
            selector.register(stream, selectors.EVENT_READ, name)
        output, tail, ended, exit_ = 0, b"", None, None
        try:
            while selector.get_map():
                limit = deadline()
                now = time.monotonic()
                if ended is not None and now > ended + 2.0:
                    break
                if limit is not None and now > limit[0] and ended is None:
                    exit_ = Exit("timeout", limit[1])
                    break
                wait = 0.5 if limit is None else max(0.0, min(0.5, limit[0] - now))
                for item, _ in selector.select(timeout=wait):
                    try:
                        data = item.fileobj.read(65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        selector.unregister(item.fileobj)
                        continue
                    if item.data == "channel":
                        try:
                            frames = reader.feed(data)
                        except ValueError as error:
                            exit_ = Exit("channel", str(error))
                            break
                        for message in frames:
                            if on_frame(message) == "end":
                                ended = time.monotonic()
                    else:
                        output += len(data)
                        if item.data == "stderr":
                            tail = (tail + data)[-4000:]
                        if output > self.output_budget:
                            exit_ = Exit("output", f"printed more than {self.caps.output_mib:g} MiB")
                            break
                if exit_ is not None:
                    break
                if ended is None and self.process.poll() is not None and not selector.get_map():
                    break
        finally:
            self.kill()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            selector.close()
            for stream in (channel, self.process.stdout, self.process.stderr):
                stream.close()
        if exit_ is None:
            exit_ = Exit("end") if ended is not None else Exit("died")
        exit_.returncode, exit_.output_bytes = self.process.returncode, output
        exit_.stderr_tail = tail.decode("utf-8", "replace")
        return exit_
