"""Regenerate the pictures of docs/simulator.md: python docs/img/simulator_plots.py"""

from pathlib import Path

from halsim.plotting import plot_memory, plot_trace
from halsim.sim import simulate

HERE = Path(__file__).resolve().parent
CASES = {
    "staged-dgpu": ("dgpu-pcie4", "staged", "before #14665: staged, dedicated GPU (dgpu-pcie4)"),
    "streaming-dgpu": ("dgpu-pcie4", "streaming:chunk=64MiB,slots=1,readers=1",
                       "after #14665: IREE streaming, dedicated GPU (dgpu-pcie4)"),
    "overlapped-dgpu": ("dgpu-pcie4", "streaming:chunk=16MiB,slots=4,readers=4",
                        "overlapped streaming, dedicated GPU (dgpu-pcie4)"),
    "import-igpu": ("igpu-unified", "import", "import, integrated GPU (igpu-unified)"),
}


def main() -> None:
    reports = {}
    for name, (platform, policy, title) in CASES.items():
        report = simulate("iree-1gib", platform, policy)
        reports[name] = report
        plot_trace(report.trace, HERE / f"{name}.png", title=f"iree-1gib: {title}")
        print(f"{name}: {report.seconds * 1e3:.1f} ms, peak staging {report.peak_staging_bytes >> 20} MiB, "
              f"{report.explain()}")
    plot_memory({"staged (dgpu-pcie4)": reports["staged-dgpu"].trace,
                 "IREE streaming (dgpu-pcie4)": reports["streaming-dgpu"].trace,
                 "import (igpu-unified)": reports["import-igpu"].trace},
                HERE / "iree-memory.png", title="iree-1gib: memory over time")


if __name__ == "__main__":
    main()
