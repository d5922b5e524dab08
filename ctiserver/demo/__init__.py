"""`ctiserver demo`: the server, the Asterisk emulator, sample customers, bot agents and
synthetic callers in one command (run.py has the whole picture)."""

from ctiserver.demo.run import Demo, DemoOptions, run_demo

__all__ = ["Demo", "DemoOptions", "run_demo"]
