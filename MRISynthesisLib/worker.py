"""What a process that the Slicer panel starts needs beyond the command itself: to end with the panel.

The panel cancels a run by killing the process it started, ``PythonSlicer``, which on Slicer's installs is
a launcher running the real interpreter as its own child. Killing the launcher leaves that child running
(still using the CPU or GPU, writing into a folder the panel has deleted). So the commands run with
``--progress-lines`` (the panel's mode) watch their parent and exit as soon as it is gone.

A launcher killed in the first second, before the worker has read its parent's pid, would leave the
worker watching the process it was re-parented to (init or a subreaper), for ever. So the panel also
names itself in ``MRISYNTHESIS_PANEL_PID``: a worker that does not descend from the panel (through however
many launchers) has lost its launcher already and exits at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

#: the environment variable in which the panel gives its own process id to the workers it starts
PANEL_PID_VARIABLE = "MRISYNTHESIS_PANEL_PID"


def _parent_alive(parent: int) -> bool:
    if sys.platform == "win32":  # no re-parenting on Windows: ask whether that process still runs
        import ctypes

        synchronize, wait_timeout = 0x00100000, 0x102
        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(synchronize, False, parent)
        if not handle:
            return False
        try:
            return kernel32.WaitForSingleObject(handle, 0) == wait_timeout
        finally:
            kernel32.CloseHandle(handle)
    return os.getppid() == parent  # POSIX: an orphan is re-parented (to init or a subreaper)


def _parent_of(pid: int) -> int | None:
    """The parent of process ``pid`` (POSIX: /proc on Linux, ``ps`` elsewhere); None when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:  # "pid (name) state ppid ...": the name may hold spaces
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        pass
    try:
        answer = subprocess.run(["ps", "-o", "ppid=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
        return int(answer.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def lost_launcher(parent: int, panel: int, max_depth: int = 16) -> bool:
    """Whether a worker whose parent is ``parent`` has already lost the launcher between it and the panel
    ``panel`` (POSIX: it was re-parented, so the panel is no longer among its ancestors). Any number of
    launchers may stand between them; False when the ancestry cannot be read."""
    pid = parent
    for _ in range(max_depth):
        if pid == panel:
            return False
        if pid <= 1:  # init (or the kernel): the chain to the panel is broken
            return True
        pid = _parent_of(pid)
        if pid is None:
            return False
    return False


def exit_with_parent(interval_s: float = 1.0) -> threading.Thread:
    """Start a daemon thread that ends this process (exit code 143, as SIGTERM would) within
    ``interval_s`` of its parent process ending; at once when ``MRISYNTHESIS_PANEL_PID`` names a panel
    whose launcher has already gone (see the module doc). Returns the thread."""
    parent = os.getppid()
    panel = os.environ.get(PANEL_PID_VARIABLE, "")
    if sys.platform != "win32" and panel.isdigit() and lost_launcher(parent, int(panel)):
        os._exit(143)

    def watch() -> None:
        while _parent_alive(parent):
            time.sleep(interval_s)
        os._exit(143)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread
