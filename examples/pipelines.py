"""A small DAG over the documented example tasks: it lives in
``taskiq_fleet/demo/pipelines.py`` so that ``fleet submit taskiq_fleet.demo.pipelines:chain``
works from a plain install; this keeps the ``examples.pipelines`` import path."""

from taskiq_fleet.demo.pipelines import chain, node

__all__ = ["chain", "node"]
