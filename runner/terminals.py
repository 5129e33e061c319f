"""Terminals: a real PTY per session, its output pumped to a callback, no orphans.

Each terminal's process starts a new session with the PTY as its controlling terminal, so
job control works and every process it starts (background jobs, ``nohup``) stays in that
session. Closing a terminal sends SIGHUP to every process of the session, then SIGKILL to
whatever is left. ``PR_SET_PDEATHSIG`` makes the kernel kill the shell if the runner dies
without cleaning up (``kill -9``).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import fcntl
import logging
import os
import secrets
import signal
import struct
import termios
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger("runner.terminals")

KILL_GRACE_SECONDS = 2.0
READ_BYTES = 64 * 1024
_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the child may only make the call, not load a library.
_libc = ctypes.CDLL(None, use_errno=True)

Output = Callable[[str], Awaitable[None]]
Exited = Callable[[int | None], Awaitable[None]]


def _child_setup() -> None:  # runs in the child between fork and exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def session_pids(sid: int) -> list[int]:
    """Every process whose session id is ``sid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp session ...
        fields = stat_line.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and fields[3] == str(sid):
            found.append(int(entry.name))
    return found


def _signal_all(sid: int, sig: int) -> bool:
    """Signal the session's processes; True when any was still there."""
    any_left = False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, sig)
        any_left = True
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            any_left = True
    return any_left


class Terminal:
    """One PTY session. ``start`` it, feed it with ``write``, end it with ``close``."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str],
                 *, run: bool = False) -> None:
        self.id = secrets.token_hex(8)
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.run = run
        self.master = -1
        self.proc: asyncio.subprocess.Process | None = None
        self.exit_code: int | None = None
        self._pump: asyncio.Task | None = None
        self._closing = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, cols: int, rows: int, on_output: Output, on_exit: Exited) -> None:
        master, slave = os.openpty()
        try:
            set_size(master, cols, rows)
            os.set_blocking(master, False)
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                preexec_fn=_child_setup,  # noqa: PLW1509 - only async-signal-safe calls
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master
        self._pump = asyncio.create_task(self._run(on_output, on_exit), name=f"pty-{self.id}")

    async def _run(self, on_output: Output, on_exit: Exited) -> None:
        loop = asyncio.get_running_loop()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while True:
                ready = loop.create_future()
                loop.add_reader(self.master, _wake, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(self.master)
                try:
                    data = os.read(self.master, READ_BYTES)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: every process holding the PTY's other side is gone
                    data = b""
                if not data:
                    break
                text = decoder.decode(data)
                if text:
                    await on_output(text)
            tail = decoder.decode(b"", final=True)
            if tail:
                await on_output(tail)
            assert self.proc is not None
            self.exit_code = await self.proc.wait()
        finally:
            master, self.master = self.master, -1
            os.close(master)
        if not self._closing:
            await on_exit(self.exit_code)

    def write(self, data: str) -> None:
        if self.master < 0 or not self.alive:
            raise OSError("the terminal has ended")
        payload = data.encode("utf-8", errors="replace")
        # The PTY buffer holds a few KiB; a paste larger than that is written in pieces.
        while payload:
            try:
                written = os.write(self.master, payload)
            except BlockingIOError:
                written = 0
                os.set_blocking(self.master, True)
                try:
                    written = os.write(self.master, payload[:1024])
                finally:
                    os.set_blocking(self.master, False)
            payload = payload[written:]

    def resize(self, cols: int, rows: int) -> None:
        if self.master < 0 or not self.alive:
            raise OSError("the terminal has ended")
        set_size(self.master, cols, rows)

    async def close(self) -> int | None:
        """End every process of the session (SIGHUP, then SIGKILL); wait for the shell."""
        self._closing = True
        if self.proc is None:
            return None
        sid = self.proc.pid
        if _signal_all(sid, signal.SIGHUP):
            try:
                await asyncio.wait_for(self.proc.wait(), KILL_GRACE_SECONDS)
            except TimeoutError:
                pass
        # Background jobs may ignore SIGHUP (nohup); nothing of the session may outlive it.
        _signal_all(sid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), KILL_GRACE_SECONDS)
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._pump, KILL_GRACE_SECONDS)
        return self.proc.returncode


def shell_argv(shell: str | None) -> list[str]:
    if shell:
        return [shell]
    for candidate in ("/bin/bash", "/usr/bin/bash", "/bin/sh"):
        if os.access(candidate, os.X_OK):
            return [candidate]
    return ["sh"]


def child_env(environ: Mapping[str, str], workspace: Path) -> dict[str, str]:
    """What user processes see: the runner's environment without any RUNNER_* setting."""
    env = {k: v for k, v in environ.items() if not k.startswith(("RUNNER_", "DEVEX_"))}
    env.update(TERM="xterm-256color", COLORTERM="truecolor", PWD=str(workspace))
    env.setdefault("LANG", "C.UTF-8")
    return env
