"""The parts of scripts/benchmark.py, one module each (see its docstring)."""
