"""Real devices (installed as ``halsim.backends``). See :mod:`halsim.registry`."""
