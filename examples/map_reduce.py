"""Map-reduce (Execution guide §1.3, §2.3, §8.3): count words over documents, then merge.

``python -m examples.map_reduce`` starts a small CPU agent and a big-memory agent, then:

- ``MapReduce.map(broker, count_words, items=DOCS, max_parallel=2)``: one node per
  document, never more than two running at once (the timings show it);
- ``MapReduce.reduce(broker, merge_counts, items=...)``: one node over the list;
- ``MapReduce(broker, count_words, merge_counts).kiq_map_reduce(items=DOCS)``: both in
  one run, the reduce starting when the last map node ended.
"""

from __future__ import annotations

from examples import fleet
from examples.flow_tasks import count_words, merge_counts
from taskiq_fleet import FleetBroker, MapReduce

AGENTS = (fleet.CPU, fleet.BIGMEM)
DOCS = [
    "the quick brown fox",
    "the lazy dog",
    "the fox jumps over the dog",
    "a quick word",
    "brown bread",
    "over and over",
]


async def scenario(broker: FleetBroker) -> None:
    print(f"map-reduce: MapReduce.map(broker, count_words, {len(DOCS)} documents, max_parallel=2)")
    mapped = await MapReduce.map(broker, count_words, items=DOCS, max_parallel=2)
    view = await fleet.run_view(broker, mapped.pipeline_id)
    for node, doc, counts in zip(view.nodes, DOCS, mapped.return_value, strict=True):
        print(f"  {node.id} on {node.worker:<6} {doc!r} -> {counts}")
    print(f"  at most {fleet.peak_parallelism(view)} ran at once")

    reduced = await MapReduce.reduce(broker, merge_counts, items=mapped.return_value)
    print(f"\nMapReduce.reduce(broker, merge_counts, items=mapped) -> {reduced.return_value}")
    print(fleet.placement(await fleet.run_view(broker, reduced.pipeline_id)))

    print("\nMapReduce(broker, count_words, merge_counts).kiq_map_reduce(items=DOCS)")
    map_reduce = MapReduce(broker, count_words, merge_counts)
    final = await map_reduce.kiq_map_reduce(items=DOCS)
    print(f"  -> {final}")
    print(fleet.placement(await fleet.run_view(broker, map_reduce.pipeline_id)))


if __name__ == "__main__":
    fleet.run(scenario, AGENTS)
