"""The fault suite (``make chaos``, ``python -m chaos``): real processes on loopback, with
faults injected while runs flow. See ``chaos/__main__.py`` for the scenarios."""
