"""Who holds a lock: `filelock`'s hook that writes the holder into the lock file, and the sentence that names it.

One writer at a time is the rule for a training run (`helpers.training.loop`) and for the folders the course's
own commands write; a process that is refused names the holder from what the hook wrote:
``{"pid", "host", "command", "since"}`` as JSON.
"""
import contextlib
import datetime
import json
import os
import socket
import sys
from pathlib import Path


def record_holder(descriptor: int) -> None:
    """filelock's ``on_acquired`` hook: write who holds the lock into the lock file (on a full disk the lock is held
    without its name)."""
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "command": " ".join([Path(sys.executable).name, *sys.argv])[:200],
              "since": datetime.datetime.now().isoformat(timespec="seconds")}
    with contextlib.suppress(OSError):
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode(), 0)


def holder(lock_file: Path) -> str:
    """Who holds a lock, as `record_holder` wrote it: 'process 123 on host h (`python ...`, since ...)'."""
    try:
        found = json.loads(Path(lock_file).read_text())
        return (f"process {found['pid']} on {found['host']} (`{found['command']}`, since "
                f"{found['since'].replace('T', ' ')})")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "another process (which has not yet written its name into the lock)"
