"""A single-node Slurm cluster for tests: Debian's ``slurm-wlm`` and ``munge``, started as root, stopped after.

`single_node_cluster()` is a context manager. When a cluster already answers (``sinfo`` with the environment's
``SLURM_CONF`` or ``/etc/slurm/slurm.conf`` lists an idle node) it is used as it is and nothing is started or
stopped. Otherwise it starts its own in a fresh folder under the system's temp folder, touching nothing in
``/etc``:

- ``munged`` (foreground, as root) with its own random key, socket, pid, seed and log files in that folder;
- ``slurmctld -D -i`` and ``slurmd -D -N localhost`` on two free TCP ports, with a ``slurm.conf`` in that folder
  (``SLURM_CONF`` points at it): one node ``localhost`` with the CPUs and memory ``slurmd -C`` reads, one
  partition ``debug``, ``proctrack/linuxproc``, ``task/none``, ``select/cons_tres`` (cores and memory),
  no accounting, ``AuthInfo=socket=`` the private munge socket;

then waits for ``sinfo`` to show the node idle and yields ``SLURM_CONF``'s value. On exit it stops the three
daemons it started (by their process ids, SIGTERM then SIGKILL after 10 s) and deletes the folder it made.
`unavailable()` gives the reason a cluster cannot be started here (not root, a program missing), or None.
"""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol")


class ClusterError(RuntimeError):
    """The test cluster did not come up: the sentence names the daemon and ends with its log's last lines."""


def unavailable() -> str | None:
    """Why a single-node cluster cannot be started here, or None when it can."""
    missing = [path for path in DAEMONS.values() if not os.access(path, os.X_OK)]
    missing += [name for name in CLIENTS if shutil.which(name) is None]
    if missing:
        return f"Slurm test cluster: {', '.join(missing)} missing (apt-get install slurm-wlm munge, as .ci/run does)"
    if os.geteuid() != 0:
        return "Slurm test cluster: munged, slurmctld and slurmd are started as root, and this is not root"
    return None


def _idle(env: dict) -> bool:
    try:
        states = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True,
                                timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return states.returncode == 0 and any(s.strip() in ("idle", "mix") for s in states.stdout.splitlines())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hardware() -> tuple[int, int]:
    """CPUs and RealMemory (MiB) of this machine, as `slurmd -C` reads them."""
    line = subprocess.run([DAEMONS["slurmd"], "-C"], capture_output=True, text=True, timeout=30).stdout
    cpus = re.search(r"\bCPUs=(\d+)", line)
    memory = re.search(r"\bRealMemory=(\d+)", line)
    if not cpus or not memory:
        raise ClusterError(f"slurmd -C printed no CPUs= and RealMemory=: {line.strip()!r}")
    return int(cpus.group(1)), int(memory.group(1))


def slurm_conf(base: Path, cpus: int, memory_mib: int, ctld_port: int, slurmd_port: int) -> str:
    return "\n".join([
        "ClusterName=grading",
        "SlurmctldHost=localhost",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={base / 'munge' / 'munge.socket'}",
        f"StateSaveLocation={base / 'state'}",
        f"SlurmdSpoolDir={base / 'spool'}",
        f"SlurmctldPidFile={base / 'slurmctld.pid'}",
        f"SlurmdPidFile={base / 'slurmd.pid'}",
        f"SlurmctldLogFile={base / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={base / 'log' / 'slurmd.log'}",
        "MailProg=/bin/true",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "MpiDefault=none",
        "ReturnToService=2",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "MinJobAge=300",
        f"NodeName=localhost CPUs={cpus} RealMemory={memory_mib} State=UNKNOWN",
        "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):         # slurmd, then slurmctld, then munged
        if process.poll() is None:
            process.terminate()
    for process in reversed(processes):
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def single_node_cluster(timeout: float = 60.0):
    """Yield the SLURM_CONF a running single-node cluster answers to (see the module docstring)."""
    existing = dict(os.environ)
    if (existing.get("SLURM_CONF") or Path("/etc/slurm/slurm.conf").exists()) and _idle(existing):
        yield existing.get("SLURM_CONF", "/etc/slurm/slurm.conf")
        return
    reason = unavailable()
    if reason:
        raise ClusterError(reason)
    base = Path(tempfile.mkdtemp(prefix="slurm-test-"))
    processes: list[subprocess.Popen] = []
    try:
        base.chmod(0o755)                                 # munged wants its socket's folders searchable by all
        for name in ("munge", "state", "spool", "log"):
            (base / name).mkdir(mode=0o755)
        key_dir = base / "munge" / "key"
        key_dir.mkdir(mode=0o700)
        key = key_dir / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        cpus, memory = _hardware()
        conf = base / "slurm.conf"
        conf.write_text(slurm_conf(base, cpus, memory, _free_port(), _free_port()))
        env = dict(os.environ, SLURM_CONF=str(conf))
        munge = base / "munge"
        commands = [
            ("munged", [DAEMONS["munged"], "-F", f"--key-file={key}", f"--socket={munge / 'munge.socket'}",
                        f"--pid-file={munge / 'munged.pid'}", f"--seed-file={munge / 'munged.seed'}",
                        f"--log-file={base / 'log' / 'munged.log'}"]),
            ("slurmctld", [DAEMONS["slurmctld"], "-D", "-i"]),
            ("slurmd", [DAEMONS["slurmd"], "-D", "-N", "localhost"]),
        ]
        for name, command in commands:
            with open(base / "log" / f"{name}.out", "wb") as out:
                processes.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL))
            if name == "munged":
                deadline = time.monotonic() + timeout
                while not (munge / "munge.socket").exists():
                    if processes[-1].poll() is not None or time.monotonic() > deadline:
                        raise ClusterError(f"munged did not start: {_tail(base / 'log' / 'munged.log')}")
                    time.sleep(0.1)
        deadline = time.monotonic() + timeout
        while not _idle(env):
            for (name, _), process in zip(commands, processes):
                if process.poll() is not None:
                    raise ClusterError(f"{name} exited with status {process.returncode}: "
                                       f"{_tail(base / 'log' / f'{name}.out')}")
            if time.monotonic() > deadline:
                raise ClusterError(f"the node did not turn idle within {timeout:.0f} s: "
                                   f"{_tail(base / 'log' / 'slurmctld.out')}")
            time.sleep(0.5)
        yield str(conf)
    finally:
        _stop(processes)
        shutil.rmtree(base, ignore_errors=True)
