"""Runnable versions of the documented scenarios."""
