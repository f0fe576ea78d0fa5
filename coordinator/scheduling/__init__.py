"""The run/node state machine (machine.py, transitions.py) and what it reads and reports."""
