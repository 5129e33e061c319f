"""The runner's IDE socket over loopback: terminal echo round trip (p50/p99), a 100 KB
``updateContent`` (p50), and the runner's RSS idle, with one terminal and with ten."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from devex_shared import access_tokens
from tests.support.ide_client import IdeClient
from tests.support.runner_process import Runner

ECHOES = 300
UPDATES = 50
KEY = access_tokens.repl_key("bench", "r1")


def rss_mib(pid: int) -> float:
    """Resident set of the runner process itself (its shells are separate processes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS")


def _quantiles(samples: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples)
    return {"p50_ms": round(statistics.median(ms), 3),
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3), "n": len(ms)}


def run() -> dict:
    root = Path(tempfile.mkdtemp())
    ws = root / "ws"
    ws.mkdir()
    (ws / "main.py").write_text("print('hi')\n")
    runner = Runner(ws, root, RUNNER_REPL_ID="r1", RUNNER_KEY=KEY, HOME=str(root))
    try:
        pid = runner.proc.pid
        token = access_tokens.sign(KEY, "r1", access_tokens.IDE_SCOPE)
        with IdeClient(runner.url + "ws", token) as ide:
            ide.welcome()
            idle = rss_mib(pid)
            session = ide.call("requestTerminal", {}, reply="terminalConnected")["sessionId"]
            ide.send("terminalInput", {"sessionId": session, "data": "stty -echo; echo ready\n"})
            ide.terminal_match(session, r"[\r\n]ready\r")
            # One key in, its echo out: the terminal's own round trip through the PTY.
            ide.send("terminalInput", {"sessionId": session, "data": "cat\n"})
            echoes = []
            for i in range(ECHOES):
                marker = f"k{i:04d}"
                t0 = time.perf_counter()
                ide.send("terminalInput", {"sessionId": session, "data": marker + "\n"})
                ide.terminal_match(session, marker)
                echoes.append(time.perf_counter() - t0)
            one_terminal = rss_mib(pid)
            for _ in range(9):
                ide.call("requestTerminal", {}, reply="terminalConnected")
            ten_terminals = rss_mib(pid)
            body = "x" * 99 + "\n"
            updates = []
            for i in range(UPDATES):
                content = body * 1000 + str(i)  # 100 KB, different each time
                t0 = time.perf_counter()
                assert ide.call("updateContent", {"path": "big.txt", "content": content})[
                    "success"]
                updates.append(time.perf_counter() - t0)
    finally:
        runner.stop()
    return {
        "runner_terminal_echo": _quantiles(echoes),
        "runner_update_content_100kb": _quantiles(updates),
        "runner_rss_mib": {"idle": idle, "one_terminal": one_terminal,
                           "ten_terminals": ten_terminals},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
