"""Every documented scenario, one after the other, on one local fleet.

``python -m examples.flow_demo`` starts the three agents of ``examples/fleet.py`` once
(``cpu``, ``bigmem``, ``gpu``) and runs the scenario of each example script on them; each
script also runs alone with the agents it needs (``python -m examples.quickstart``...).
"""

from __future__ import annotations

from examples import (
    audio_dataflow,
    fleet,
    map_reduce,
    pipeline_patterns,
    quickstart,
    resource_aware,
    retry_demo,
    tracking_demo,
)
from taskiq_fleet import FleetBroker

EXAMPLES = (
    quickstart,
    audio_dataflow,
    map_reduce,
    pipeline_patterns,
    resource_aware,
    retry_demo,
    tracking_demo,
)


async def every_scenario(broker: FleetBroker) -> None:
    for example in EXAMPLES:
        print(f"===== {example.__name__} =====")
        await example.scenario(broker)
        print()


if __name__ == "__main__":
    fleet.run(every_scenario, fleet.ALL)
