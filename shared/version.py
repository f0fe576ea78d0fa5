"""The release, read by the build (hatch) and reported by every process and message."""

__version__ = "0.1.0"
