"""The examples in docs/ run as written: a doc whose code no longer works misleads more than none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from halsim.platform import load_platform

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def test_calibrate_and_choose_runs_end_to_end_on_the_cpu_device(tmp_path):
    # Quick calibration, a 51-policy sweep and three compared policies: about 20 s on a 2-vCPU VM.
    command = [sys.executable, str(EXAMPLES / "calibrate_and_choose.py"), "--quick", "--dir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    platform = load_platform(tmp_path / "platform.toml")  # the fitted platform is one the simulator accepts
    assert platform.host.memcpy_per_thread > 0
    assert "bytes verified" in out  # the chosen policy uploaded the file for real and checked every byte
    assert "median |error|" in out and "ranking:" in out  # and compare put the top three next to the device
