"""What a process that the Slicer panel starts needs beyond the command itself: to end with the panel.

The panel cancels a run by killing the process it started, ``PythonSlicer``, which on Slicer's installs is
a launcher running the real interpreter as its own child. Killing the launcher leaves that child running
(still using the CPU or GPU, writing into a folder the panel has deleted). So the commands run with
``--progress-lines`` (the panel's mode) watch their parent and exit as soon as it is gone.
"""

from __future__ import annotations

import os
import sys
import threading
import time


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


def exit_with_parent(interval_s: float = 1.0) -> threading.Thread:
    """Start a daemon thread that ends this process (exit code 143, as SIGTERM would) within
    ``interval_s`` of its parent process ending. Returns the thread."""
    parent = os.getppid()

    def watch() -> None:
        while _parent_alive(parent):
            time.sleep(interval_s)
        os._exit(143)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread
