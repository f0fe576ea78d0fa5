"""The demo that ``fleet up`` serves: the documents' example tasks and a DAG over them.

Shipped inside the package, not in ``examples/``, so that ``pip install taskiq-fleet`` then
``fleet up`` and ``fleet submit taskiq_fleet.demo.pipelines:chain`` work from a plain
install; ``examples/tasks.py`` and ``examples/pipelines.py`` re-export these modules.
"""
