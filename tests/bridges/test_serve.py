"""`tagmatch serve`: the Textual app served by textual-serve. The test talks to the server as the
browser page does (its websocket: the app's screen out, key presses in): the Home screen lists
the saved scan, and Enter opens its review. tests/bridges/test_browser.py does it with a real
browser (`make test-browser`)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import free_port, serving

pytestmark = pytest.mark.slow
ANSI = re.compile(r"\x1b\[[0-9;?$]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")


async def _screen_until(ws, text: str, seen: list[str], timeout: float = 90) -> str:
    """What the app has drawn, once `text` is on it."""
    import aiohttp

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            msg = await ws.receive(timeout=1)
        except asyncio.TimeoutError:
            continue
        if msg.type == aiohttp.WSMsgType.BINARY:
            seen.append(msg.data.decode("utf-8", "replace"))
        elif msg.type == aiohttp.WSMsgType.TEXT:
            seen.append(msg.data)
        else:
            break
        screen = ANSI.sub("", "".join(seen))
        if text in screen:
            return screen
    raise AssertionError(f"{text!r} never appeared; the screen: {ANSI.sub('', ''.join(seen))[-2000:]!r}")


def test_serve_shows_home_and_a_key_opens_the_saved_scan(saved_scan, messy):
    import aiohttp

    async def drive(port: int) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws?width=100&height=30") as ws:
                home = await _screen_until(ws, "i Index", [])
                assert "match messy audio files" in home and str(messy) in home  # Home, with the scan listed
                await ws.send_json(["stdin", "\r"])  # Enter: open the highlighted scan
                review = await _screen_until(ws, "Review messy-20261204-120000.json", [])
                assert "accepted" in review

    with serving(env=saved_scan) as (port, _):
        asyncio.run(drive(port))


def _listening(port: int) -> list[str]:
    """The local addresses listening on `port` (Linux: /proc/net/tcp, hex little-endian IPv4)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":  # LISTEN
            found.append(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's socket table")
def test_serve_binds_this_machine_only_unless_told(saved_scan):
    with serving(env=saved_scan) as (port, _):
        assert _listening(port) == ["127.0.0.1"]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tagmatch", "serve", "--host", "0.0.0.0", "--port", str(port)],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **saved_scan})
    try:
        first = proc.stderr.readline()
        assert "anyone who can reach port" in first and "no login" in first
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_refuses_a_bad_document_with_one_line(tmp_path):
    bad = tmp_path / "scan.json"
    bad.write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "tagmatch", "serve", str(bad), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
