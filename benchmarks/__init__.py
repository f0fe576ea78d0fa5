"""Benchmarks for the placement core; run as scripts, never as timed tests."""
