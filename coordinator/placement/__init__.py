"""Placement: the pool of workers and the stack of stages that places one request (stack.py)."""
