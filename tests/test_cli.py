"""The command line end to end, through typer's runner."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from halsim.cli import app
from halsim.formats import write_safetensors

runner = CliRunner()


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"w": np.arange(5000, dtype=np.float32), "b": np.ones(7, np.float16)})
    return path


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_simulate_json_has_the_documented_fields():
    result = run("simulate", "--workload", "iree-1gib", "--platform", "dgpu-pcie4", "--policy", "staged", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("seconds", "bytes", "gb_per_s", "peak_staging_bytes", "peak_device_bytes", "copies",
                "imported_bytes", "policy", "device"):
        assert key in data
    assert data["peak_staging_bytes"] == 1 << 30 and data["peak_device_bytes"] == 1 << 30


def test_simulate_writes_plot_and_trace(tmp_path):
    plot, trace = tmp_path / "p.png", tmp_path / "t.json"
    result = run("simulate", "-w", "iree-1gib", "-p", "igpu-unified", "--policy", "import", "--plot", plot,
                 "--trace", trace)
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "traceEvents" in json.loads(trace.read_text())
    assert "bounded by" in result.stdout


def test_upload_verify_json(model):
    result = run("upload", model, "--device", "cpu", "--policy", "streaming:chunk=1000,slots=2", "--verify", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["bytes"] == 5000 * 4 + 7 * 2 and data["device"] == "cpu"
    assert data["peak_staging_bytes"] <= 2000


def test_lanes_say_where_the_time_went(model):
    result = run("upload", model, "--device", "cpu", "--policy", "streaming:chunk=1000,slots=2,readers=2", "--lanes")
    assert result.exit_code == 0, result.output
    assert "lane by lane" in result.stdout and "bounded by" in result.stdout
    assert "copy/d0q0" in result.stdout and "copies: the first began" in result.stdout
    assert "read steps started" in result.stdout and "copy steps started" in result.stdout  # dispatch delays
    result = run("simulate", "-w", "gpt2", "-p", "h100-pcie5", "--policy", "import", "--lanes")
    assert result.exit_code == 0, result.output
    assert "import/d0" in result.stdout and "unimport" in result.stdout


def test_upload_on_two_devices_and_the_simulator(model):
    result = run("upload", model, "-d", "cpu", "-d", "cpu", "--shard", "rows", "--verify")
    assert result.exit_code == 0, result.output
    result = run("upload", model, "-d", "sim:h100-pcie5", "--verify")
    assert result.exit_code == 0, result.output


def test_inspect(model):
    result = run("inspect", model, "--json")
    assert result.exit_code == 0
    names = [t["name"] for t in json.loads(result.stdout)["tensors"]]
    assert sorted(names) == ["b", "w"]
    assert "safetensors" in run("inspect", model).stdout


def test_devices_lists_every_backend():
    result = run("devices", "--json")
    assert result.exit_code == 0
    statuses = {s["backend"]: s for s in json.loads(result.stdout)}
    assert set(statuses) == {"cpu", "cuda", "vulkan"}
    assert statuses["cpu"]["available"]
    for status in statuses.values():
        assert status["available"] or status["reason"]
    text = run("devices").stdout
    assert "cpu: available" in text


@pytest.mark.parametrize("args,phrase", [
    (("upload", "/no/such/model.safetensors"), "/no/such/model.safetensors"),
    (("simulate", "-w", "iree-1gib", "-p", "no-such-platform"), "no-such-platform"),
    (("simulate", "-w", "iree-1gib", "--policy", "streaming:slots=0"), "slots"),
    (("simulate",), "exactly one of --workload"),
    (("inspect", "{bad}"), "bad.safetensors"),
])
def test_errors_are_one_line_and_exit_nonzero(tmp_path, args, phrase):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((10**6).to_bytes(8, "little") + b"{}")
    args = [str(bad) if a == "{bad}" else a for a in args]
    result = run(*args)
    assert result.exit_code == 1
    assert phrase in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 3  # one line, maybe wrapped


def test_debug_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["--debug", "upload", str(tmp_path / "missing.safetensors")])
    assert result.exit_code != 0
    assert result.exception is not None


def test_demo_small(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "--out", out, "--size", "4MiB")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["simulated"]) == 4
    assert summary["real"] and all(r["verified"] for r in summary["real"])
    assert any(p.suffix == ".png" for p in out.iterdir())
    by_case = {c["case"]: c for c in summary["simulated"]}
    assert by_case["import"]["copies"] == 0 and by_case["import"]["peak_staging_bytes"] == 0
