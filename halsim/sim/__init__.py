"""The simulator: storage, host memory, PCIe and GPUs in simpy time.

``Simulator(platform).device(i)`` is a device like any other for the engine;
``simulate(workload, platform, policy)`` runs one upload and returns its
Report. See ``docs/simulator.md`` for the model.
"""

from halsim.sim.device import SimBuffer, SimDevice, SimExecution
from halsim.sim.simulator import Simulator, simulate

__all__ = ["Simulator", "SimDevice", "SimExecution", "SimBuffer", "simulate"]
