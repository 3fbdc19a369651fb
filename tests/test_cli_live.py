"""``qe live`` from the command line: a real ``qe gateway-sim`` process replays ES minutes of 2013-10-10, a
real ``qe live`` process trades them on paper through it and stops cleanly on Ctrl-C (SIGINT), leaving a
stopped paper run in the ledger and a status ``qe live status`` reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.test_live_replay import _warehouse
from warehouse.features.materialize import build_features

REPO = Path(__file__).resolve().parents[1]
QUERY = ("SELECT b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume, b.contract, f.rsi_14 "
         "FROM bars_1m b JOIN features_1m f USING (symbol, ts) WHERE b.symbol = 'ES'")


def _qe(*args: str, **kwargs) -> subprocess.Popen:  # noqa: ANN003
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_qe_live_trades_paper_through_a_gateway_process_and_stops_on_sigint(tmp_path: Path) -> None:
    wh = _warehouse(tmp_path / "wh", ["20131006", "20131007", "20131008", "20131009"])
    build_features(wh, "1m")
    wh.close()
    _warehouse(tmp_path / "day", ["20131010"]).close()
    sim = _qe("-w", str(tmp_path / "day"), "gateway-sim", "--port", "0", "--replay", "ES", "--speed", "120")
    live = None
    try:
        line = sim.stdout.readline()
        port = int(line.split("listening on 127.0.0.1:")[1].split(" ")[0])
        config = tmp_path / "live.toml"
        config.write_text(f"""
[backtest]
initial_capital = 2000000
timeframe = "1m"

[live]
roots = ["ES"]
bar_wait_s = 0

[ib.accounts.paper]
id = "DU1234567"
kind = "paper"
port = {port}

[ib.strategies.band]
account = "paper"
contracts = {{ ES = "ESZ3" }}
""")
        live = _qe("-w", str(tmp_path / "wh"), "live", "-s", "engine.strategies.feature_band:FeatureBand",
                   "-q", QUERY, "-c", str(config), "-p", "low=45", "-p", "high=55", "-p", "exit_low=49",
                   "-p", "exit_high=51")
        status_file = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert live.poll() is None, live.communicate()[1][-2000:]
            found = list((tmp_path / "wh" / "live").glob("*/status.json"))
            if found:
                status_file = found[0]
                status = json.loads(status_file.read_text())
                if status["state"] == "running" and status["last_bar"]["ts"] is not None:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("the session decided no bar within 120 s")
        time.sleep(3)  # a few more bars
        live.send_signal(signal.SIGINT)
        out, err = live.communicate(timeout=60)
        assert live.returncode == 0, err[-2000:]
        assert "starting paper session" in err
        status = json.loads(status_file.read_text())
        assert status["state"] == "stopped" and status["kind"] == "paper"
        shown = subprocess.run([sys.executable, "-m", "engine.cli", "-w", str(tmp_path / "wh"), "live", "status",
                                "--json"], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["run_id"] == status["run_id"]
        runs = subprocess.run([sys.executable, "-m", "engine.cli", "-w", str(tmp_path / "wh"), "sql",
                               f"SELECT kind, status, bars FROM runs WHERE run_id = '{status['run_id']}'"],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert runs.returncode == 0, runs.stderr
        assert "paper" in runs.stdout and "stopped" in runs.stdout
    finally:
        for process in (live, sim):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
