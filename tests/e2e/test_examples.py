"""Each example script runs as users run it (``python -m examples.NAME``, its own local fleet
of processes) and prints what the documents promise: results, and where each node ran."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.processes import ROOT

COUNTS = (
    "{'the': 4, 'over': 3, 'brown': 2, 'dog': 2, 'fox': 2, 'quick': 2, "
    "'a': 1, 'and': 1, 'bread': 1, 'jumps': 1, 'lazy': 1, 'word': 1}"
)


def run_example(name: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", f"examples.{name}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def worker_of(out: str, node: str) -> str:
    """The worker a placement line names for ``node`` (``NODE ... ran on WORKER``)."""
    found = re.search(rf"^\s+{re.escape(node)}\s.*ran on (\w+)", out, re.MULTILINE)
    assert found is not None, f"no placement line for {node}:\n{out}"
    return found.group(1)


CPU_BOXES = {"cpu", "bigmem"}
"""Where a small CPU task may land: the agent answers the client before the coordinator
has applied the outcome, so the previous task's reservation on ``cpu`` may still be held
when the next is placed, and the default policy then picks ``bigmem`` (never the GPU box)."""


def check_quickstart(out: str) -> None:
    assert "quickstart: add_one.kiq(1)\n  -> 2\n" in out
    assert worker_of(out, "add_one") in CPU_BOXES
    assert "  -> [3, 3, 3, 3]\n" in out
    pipeline = out[out.index("quickstart: Pipeline") :].split("\n\n")[0]
    steps = re.findall(r"^  (\d:\w+) +ran on (\w+): COMPLETED -> (.*)$", pipeline, re.MULTILINE)
    assert [(step, result) for step, _, result in steps] == [
        ("0:add_one", "3"),
        ("1:repeat", "[3, 3, 3, 3]"),
    ]
    assert {worker for _, worker, _ in steps} <= CPU_BOXES


def check_audio_dataflow(out: str) -> None:
    assert "  level 1: tag -> tags; embed -> embedding" in out
    assert "  tags = ['intro.mp3', 'outro.flac']" in out
    assert "  embedding = {'vector': [5, 9, 10], 'gpu_devices': [0]}" in out
    assert worker_of(out, "extract_0") in CPU_BOXES
    assert worker_of(out, "tag_1") in CPU_BOXES
    assert "embed_2              ran on gpu (gpu 0)" in out


def check_map_reduce(out: str) -> None:
    mapped = re.findall(r"^  count_words_\d on (\w+) +'", out, re.MULTILINE)
    assert len(mapped) == 6
    assert set(mapped) <= CPU_BOXES
    assert "'the fox jumps over the dog' -> {'the': 2, 'fox': 1, 'jumps': 1," in out
    peak = re.search(r"at most (\d+) ran at once", out)
    assert peak is not None
    assert 1 <= int(peak.group(1)) <= 2
    assert f"MapReduce.reduce(broker, merge_counts, items=mapped) -> {COUNTS}" in out
    assert f"kiq_map_reduce(items=DOCS)\n  -> {COUNTS}\n" in out
    assert worker_of(out, "merge_counts_6") in CPU_BOXES


def check_resource_aware(out: str) -> None:
    assert re.search(r"heavy_computation_2 +asks 2 cpu, 4096 MB +fits bigmem,gpu ", out)
    assert worker_of(out, "heavy_computation_2") == "bigmem"
    assert re.search(r"memory_intensive_3 +asks 1 cpu, 12288 MB +fits bigmem ", out)
    assert worker_of(out, "memory_intensive_3") == "bigmem"
    assert re.search(r"embed_4 +asks 1 cpu, 1 gpu +fits gpu +ran on gpu \(gpu 0\)", out)
    assert re.search(r"fetch_metadata_5 +asks 0.25 cpu, 64 MB ", out)
    assert re.search(r"ResourceAwareExecutor \(this host, psutil\): \d+ light at once", out)
    assert "ClusterAwareExecutor: 6 heavy_computation at once (bigmem 4, gpu 2)" in out
    assert "ClusterAwareExecutor: 14 light at once (bigmem 8, cpu 2, gpu 4)" in out
    assert "DataflowPipeline(broker, max_parallel=14).map(light_task, 28 items)" in out
    assert "results = [1, 4, 9, 16, 25] ... 784: 28 values" in out
    peak = re.search(r"at most (\d+) at once", out)
    assert peak is not None
    assert 1 <= int(peak.group(1)) <= 14


def check_retry_demo(out: str) -> None:
    assert "-> https://api.example.org answered on attempt 3" in out
    assert "0:call_api ran on cpu: COMPLETED" in out
    assert "-> fetched https://example.org on attempt 3" in out
    assert "is_err=True, failed step 0:validate" in out
    assert "ValueError: invalid record {'age': -1} (attempt 1)" in out
    assert "except ValueError caught PipelineError(ValueError): invalid record" in out
    assert "-> greenhouse=21.5C on attempt 2" in out
    assert "read_sensor          ran on cpu, attempt 2" in out


def check_tracking_demo(out: str) -> None:
    assert re.search(r"-> 4 tracks, loudest -17.25 dB \(step 2, sequential, on (cpu|bigmem)\)", out)
    assert "  status: COMPLETED, 3 steps" in out
    assert re.search(r"0:list_album COMPLETED on (cpu|bigmem) \(\d+ ms\)", out)
    assert re.search(r"1:loudness   COMPLETED on (cpu|bigmem)(,(cpu|bigmem))? \(\d+ ms\)", out)
    assert "  slowest step: " in out
    assert "is_err=True; status: FAILED" in out
    assert re.search(
        r"1:publish    FAILED on (cpu|bigmem): PermissionError: cannot publish 4 tracks", out
    )
    assert "list_pipelines: 2 records" in out
    assert "delete_pipeline: record gone=True, 1 left" in out


def check_pipeline_patterns(out: str) -> None:
    assert "  -> 21\n" in out
    assert "  1:square+add_one   [16, 5]\n  2:audit            audited [16, 5]\n" in out
    assert "  results: ['features', 'tags']" in out
    assert re.search(
        r"failed: transcribe_2: RuntimeError: no speech model for 2 tracks on this fleet "
        r"\(attempts 1, on \w+\)",
        out,
    )
    assert "  skipped: ['subtitle_3']" in out
    assert re.search(r"asyncio.TimeoutError: pipeline \w+ failed: run timed out after 0.5 s", out)
    assert "  also a PipelineError: True" in out
    assert "another connection: COMPLETED: 0:add_one COMPLETED, 1:square COMPLETED" in out
    assert "  ran before wait_result: True\n  -> 6\n" in out


CHECKS = {
    "quickstart": check_quickstart,
    "audio_dataflow": check_audio_dataflow,
    "map_reduce": check_map_reduce,
    "pipeline_patterns": check_pipeline_patterns,
    "resource_aware": check_resource_aware,
    "retry_demo": check_retry_demo,
    "tracking_demo": check_tracking_demo,
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_each_example_runs_on_its_own_fleet(name: str) -> None:
    CHECKS[name](run_example(name))


def test_flow_demo_runs_every_scenario_on_one_fleet() -> None:
    out = run_example("flow_demo")
    sections = re.split(r"^===== examples\.(\w+) =====\n", out, flags=re.MULTILINE)
    by_name = dict(zip(sections[1::2], sections[2::2], strict=True))
    assert list(by_name) == list(CHECKS)
    for name, text in by_name.items():
        CHECKS[name](text)
