"""``qe gateway-sim``: the simulator for a person says where it listens, and the real client can connect there."""

from __future__ import annotations

import asyncio

from ib_async import IB
from typer.testing import CliRunner

from engine.adapters.ib.gateway_sim.serve import serve
from engine.cli import app
from tests.ib.conftest import run


def test_serve_prints_where_it_listens_and_accepts_the_real_client(ib_log) -> None:
    lines: list[str] = []

    async def body() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(0, ["DU1234567", "DU7654321"], ready=lines.append, stop=stop))
        while not lines:
            await asyncio.sleep(0.01)
        port = int(lines[0].split("listening on 127.0.0.1:")[1].split(" ")[0])
        ib = IB()
        try:
            await ib.connectAsync("127.0.0.1", port, clientId=5, timeout=5, raiseSyncErrors=True)
            assert ib.managedAccounts() == ["DU1234567", "DU7654321"]
        finally:
            ib.disconnect()
            stop.set()
            await task
    run(body)
    assert "accounts ******567, ******321" in lines[0]  # masked to the last 3 characters
    assert "DU1234567" not in lines[0]


def test_cli_command_is_mounted() -> None:
    result = CliRunner().invoke(app, ["gateway-sim", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output and "--account" in result.output
