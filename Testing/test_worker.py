"""A worker the Slicer panel starts ends when the process that started it is killed (the PythonSlicer
launcher), instead of running on as an orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX re-parenting; the Windows path is not run here")

#: a stand-in for PythonSlicer: starts the worker as its child, prints the child's pid, waits
LAUNCHER = """
import subprocess, sys, time
child = subprocess.Popen({command!r})
print(child.pid, flush=True)
time.sleep({wait_s})
"""

#: a worker that starts its watch a second late, as one importing torch does
LATE_WATCH = "import time; time.sleep(1); from MRISynthesisLib.worker import exit_with_parent; exit_with_parent(0.1); time.sleep(60)"


def _panel_environment(panel_pid: int | None) -> dict[str, str]:
    from MRISynthesisLib.worker import PANEL_PID_VARIABLE

    environment = {k: v for k, v in os.environ.items() if k != PANEL_PID_VARIABLE}
    if panel_pid is not None:
        environment[PANEL_PID_VARIABLE] = str(panel_pid)
    return environment


def _through_a_launcher(command: list[str], wait_s: float, panel_pid: int | None) -> tuple[subprocess.Popen, int]:
    """Start ``command`` as the child of a launcher that lives ``wait_s``: (the launcher, the worker's pid).
    The launcher's output is not read to its end: the worker holds that pipe too."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER.format(command=command, wait_s=wait_s)],
                                stdout=subprocess.PIPE, text=True, env=_panel_environment(panel_pid))
    return launcher, int(launcher.stdout.readline())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its new parent) has ended
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _kill_the_launcher_of(command: list[str], settle_s: float) -> bool:
    """Start ``command`` through a launcher, let it work ``settle_s``, kill the launcher: did the worker end
    within 10 s? (It is killed afterwards either way.)"""
    launcher, worker = _through_a_launcher(command, wait_s=60, panel_pid=os.getpid())
    try:
        time.sleep(settle_s)
        assert _alive(worker), "the worker ended before its launcher was killed"
        launcher.kill()
        launcher.wait()
        return _wait_gone(worker, 10)
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_the_worker_exits_when_its_launcher_is_killed():
    code = "from MRISynthesisLib.worker import exit_with_parent; import time; exit_with_parent(0.1); time.sleep(60)"
    assert _kill_the_launcher_of([sys.executable, "-c", code], settle_s=1.0)


def test_a_command_run_for_the_panel_ends_with_its_launcher(tmp_path):
    """The panel's Cancel: ``python -m MRISynthesisLib rank ... --progress-lines`` (minutes of work)."""
    command = [sys.executable, "-m", "MRISynthesisLib", "rank", "--data", "phantom:brain:2", "--out",
               str(tmp_path / "ranking"), "--device", "cpu", "--progress-lines"]
    assert _kill_the_launcher_of(command, settle_s=4.0)


def test_without_the_watch_the_orphan_runs_on():
    """The case the watch exists for: killing the launcher alone does not end its child."""
    assert not _kill_the_launcher_of([sys.executable, "-c", "import time; time.sleep(60)"], settle_s=0.5)


def _launcher_gone_before_the_watch(panel_pid: int | None) -> bool:
    """The launcher starts the worker and dies at once, before the worker reads its parent: did the
    worker end within 10 s? (It is killed afterwards either way.)"""
    launcher, worker = _through_a_launcher([sys.executable, "-c", LATE_WATCH], wait_s=0, panel_pid=panel_pid)
    launcher.wait()
    try:
        return _wait_gone(worker, 10)
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_a_worker_whose_launcher_died_before_it_looked_exits():
    """Cancel in the first second: the panel's pid tells the worker it was re-parented already."""
    assert _launcher_gone_before_the_watch(panel_pid=os.getpid())


def test_without_the_panel_pid_that_worker_runs_on():
    """The case the panel's pid exists for: its parent, read too late, is whoever adopted it."""
    assert not _launcher_gone_before_the_watch(panel_pid=None)


def test_a_worker_that_descends_from_the_panel_through_launchers_is_not_lost():
    from MRISynthesisLib.worker import _parent_of, lost_launcher

    assert not lost_launcher(os.getpid(), os.getpid())
    assert not lost_launcher(os.getpid(), os.getppid())  # our parent is the panel, we are the launcher
    assert not lost_launcher(os.getpid(), _parent_of(os.getppid()) or 1)  # two launchers between
    assert lost_launcher(os.getpid(), 999_999_999)  # a parent that does not descend from that panel
