"""Stateful properties of the run/node state machine (coordinator/scheduling/machine.py).

Hypothesis drives a Scheduler with 2-4 workers of different sizes and random small
DAGs through submits, ticks, outcomes, accepts, rejects, lost and returning workers
and cancels. A small model of every agent (what it was assigned and still runs) answers
for the workers, so heartbeats say the truth. A cancelled attempt runs on until its agent
stops it (a later step: its outcome, or it is just no longer listed), and until the
scheduler hears that, its reservation must be held (``stopping``: the model's own record,
not the scheduler's). After every step the scheduler's books
must agree with each other and with the pool; at the end every run must finish and
every reservation be given back. An illegal node transition raises ``InvalidTransition``
in ``Scheduler._move``, so it fails the test wherever it happens; besides the checks
here, which rebuild each count independently, the scheduler's own ``validate_state``
must pass after every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from coordinator.placement.pool import ResourceAwareWorkerPool
from coordinator.scheduling.machine import Decisions, Scheduler, SchedulerConfig
from coordinator.scheduling.state import IN_FLIGHT
from shared.dag import Dag, Node, RetryPolicy, RunOptions
from shared.resources import ResourceRequest, WorkerSpec
from shared.wire.protocol import (
    Assignment,
    AttemptRef,
    ErrorInfo,
    Heartbeat,
    Outcome,
    Register,
    Reject,
    task_digest,
)
from shared.wire.runs import TERMINAL_NODE, TERMINAL_RUN, Submit

TASK = "app:work"
INTERVAL = 1.0
GRACE = max(2 * INTERVAL, 1.0)
"""Unreceived assignments are lost in transit past this (``recovery.lost_in_transit``)."""
EPS = 1e-9

# -- strategies --------------------------------------------------------------------------------

worker_shapes = st.fixed_dictionaries(
    {
        "cpu": st.sampled_from([2, 4, 4, 8]),
        "ram_mb": st.sampled_from([2048, 8192]),
        "gpus": st.sampled_from([0, 0, 1, 2]),
    }
)

requests = st.builds(
    ResourceRequest,
    cpu=st.sampled_from([0.5, 0.5, 1.0, 1.0, 1.5, 2.0, 3.0, 4.0]),
    ram_mb=st.sampled_from([0, 0, 512, 2048]),
    gpus=st.sampled_from([0.0] * 6 + [0.5, 1.0]),
)

retry_policies = st.builds(
    RetryPolicy,
    max_retries=st.integers(0, 2),
    delay=st.sampled_from([0.0, 0.5, 2.0]),
    retry_on=st.sampled_from([(), ("Flaky",)]),
)

run_options = st.builds(
    RunOptions,
    max_parallel=st.sampled_from([None, None, 1, 2]),
    on_error=st.sampled_from(["stop", "continue"]),
    timeout=st.sampled_from([None, None, None, 6.0, 30.0]),
    priority=st.integers(-1, 1),
)


@st.composite
def dags(draw: st.DrawFn) -> Dag:
    """1-5 nodes; each depends on up to two earlier ones, by value when they publish one."""
    nodes: list[Node] = []
    for i in range(draw(st.integers(1, 5))):
        outputs = draw(st.sampled_from([(), (f"o{i}",), (f"o{i}a", f"o{i}b")]))
        inputs: dict[str, str] = {}
        after: list[str] = []
        if i:
            for dep in draw(st.lists(st.integers(0, i - 1), max_size=2, unique=True)):
                if nodes[dep].outputs:
                    inputs[f"p{dep}"] = nodes[dep].outputs[-1]
                else:
                    after.append(nodes[dep].id)
        nodes.append(
            Node(
                id=f"n{i}",
                task=TASK,
                inputs=inputs,
                after=tuple(after),
                outputs=outputs,
                request=draw(requests),
                retry=draw(retry_policies),
                priority=draw(st.integers(-1, 1)),
            )
        )
    return Dag(nodes=tuple(nodes))


# -- the agents' side --------------------------------------------------------------------------


@dataclass
class Agent:
    spec: WorkerSpec
    started_at: float = 1.0
    state: Literal["up", "silent", "gone"] = "up"
    """silent: heartbeats do not arrive, but assignments and outcomes still travel."""
    running: dict[AttemptRef, Assignment] = field(default_factory=dict)
    accepted: set[AttemptRef] = field(default_factory=set)
    cancelling: set[AttemptRef] = field(default_factory=set)
    """Asked to cancel: still running (and listed) until a ``stop`` step ends it."""

    def drop(self, ref: AttemptRef) -> None:
        self.running.pop(ref, None)
        self.accepted.discard(ref)
        self.cancelling.discard(ref)

    def clear(self) -> None:
        self.running.clear()
        self.accepted.clear()
        self.cancelling.clear()


@dataclass(frozen=True)
class Stopping:
    """A cancelled attempt that held a reservation, its agent not heard to have ended it."""

    worker: str
    request: ResourceRequest
    placed_at: float
    received: bool
    """Accepted or listed before the cancel: a heartbeat without it then says it ended."""


def result_for(a: Assignment, outputs: tuple[str, ...]) -> Any:
    if len(outputs) > 1:
        return [f"{a.ref.key}:{name}" for name in outputs]
    return a.ref.key


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.agents: dict[str, Agent] = {}
        self.runs = 0
        self.seq = 0
        self.restarts = 1.0
        self.dispatches = 0
        self.stopping: dict[AttemptRef, Stopping] = {}
        self.reserved: dict[AttemptRef, str] = {}
        """The attempts holding a reservation (their own, or their lease's) after the last
        step (a cancel in this one released them)."""
        self.dispatched: dict[AttemptRef, tuple[float, ResourceRequest]] = {}
        self.received: set[AttemptRef] = set()

    @initialize(
        shapes=st.lists(worker_shapes, min_size=2, max_size=4),
        max_parallel=st.sampled_from([None, 2, 4]),
        grace=st.sampled_from([0.0, 3.0]),
        dag=dags(),
        options=run_options,
        pipeline=st.sampled_from([1, 3]),
    )
    def start(
        self,
        shapes: list[dict[str, Any]],
        max_parallel: int | None,
        grace: float,
        dag: Dag,
        options: RunOptions,
        pipeline: int,
    ) -> None:
        self.pool = ResourceAwareWorkerPool()
        self.config = SchedulerConfig(
            max_parallel=max_parallel,
            infeasible_grace=grace,
            system_retries=2,
            max_rejects=3,
            pipeline=pipeline,
        )
        self.sched = Scheduler(self.pool, self.config, rand=lambda: 0.5)
        for i, shape in enumerate(shapes):
            spec = WorkerSpec.model_validate({"name": f"w{i}", **shape})
            self.agents[spec.name] = Agent(spec)
            self.register(spec.name)
        self.submit(dag, options)

    # -- messages ---------------------------------------------------------------------------

    def register(self, name: str) -> None:
        agent = self.agents[name]
        msg = Register(
            spec=agent.spec,
            agent_version="test",
            pid=1,
            started_at=agent.started_at,
            heartbeat_interval=INTERVAL,
            tasks=(TASK,),
            running=tuple(agent.running),
        )
        self.sched.register(msg, self.now)
        self.heard(name, set(agent.running))

    def beat(self, name: str) -> None:
        agent = self.agents[name]
        self.seq += 1
        msg = Heartbeat(
            worker=name,
            started_at=agent.started_at,
            seq=self.seq,
            interval=INTERVAL,
            capacity=agent.spec,
            cpu_percent=0.0,
            available_ram_mb=agent.spec.ram_mb,
            running=tuple(agent.running),
            tasks_digest=task_digest((TASK,)),
        )
        self.sched.heartbeat(msg, self.now)
        self.heard(name, set(agent.running))

    def heard(self, name: str, listed: set[AttemptRef]) -> None:
        """The agent listed what it runs: a stopping attempt it no longer lists ended, if
        it had received it (else only once it is past the lost-in-transit grace)."""
        for ref, stop in list(self.stopping.items()):
            past = self.now - stop.placed_at > GRACE
            if stop.worker == name and ref not in listed and (stop.received or past):
                del self.stopping[ref]
        self.received |= {ref for ref in listed if ref in self.sched._attempts}

    def ended(self, name: str, ref: AttemptRef) -> None:
        """The agent reported the attempt ended (an outcome, a reject)."""
        stop = self.stopping.get(ref)
        if stop is not None and stop.worker == name:
            del self.stopping[ref]

    def finish(self, name: str, ref: AttemptRef, ok: bool, *, right_shape: bool = True) -> None:
        agent = self.agents[name]
        a = agent.running[ref]
        agent.drop(ref)
        run = self.sched.runs.get(ref.run_id)
        outputs = run.submit.dag.by_id[ref.node_id].outputs if run is not None else ()
        if ok:
            value = result_for(a, outputs) if right_shape else "not-a-list"
            out = Outcome(
                ref=ref,
                worker=name,
                status="succeeded",
                return_value=value,
                started_at=self.now,
                finished_at=self.now,
            )
        else:
            out = Outcome(
                ref=ref,
                worker=name,
                status="failed",
                error=ErrorInfo(type="Flaky", message="boom"),
                started_at=self.now,
                finished_at=self.now,
            )
        self.sched.outcome(out, self.now)
        self.ended(name, ref)

    def report_cancelled(self, name: str, ref: AttemptRef) -> None:
        self.agents[name].drop(ref)
        out = Outcome(
            ref=ref,
            worker=name,
            status="cancelled",
            error=ErrorInfo(type="AttemptCancelled", message="asked"),
            started_at=self.now,
            finished_at=self.now,
        )
        self.sched.outcome(out, self.now)
        self.ended(name, ref)

    def drain(self) -> Decisions:
        """Tick and deliver the decisions to the agents, as the service does after each batch.

        Everything is delivered before anything is checked, so a failed check leaves the
        agents' side whole for the teardown.
        """
        self.sched.tick(self.now)
        d = self.sched.take()
        self.count(d)
        twice = [a.ref.key for b in d.assign.values() for a in b if a.ref in self.all_running()]
        to_gone = [w for w in d.assign if self.agents[w].state == "gone"]
        for worker, batch in d.assign.items():
            self.agents[worker].running.update((a.ref, a) for a in batch)
            self.dispatched.update((a.ref, (self.now, a.request)) for a in batch)
        tracked = [r.key for b in d.cancel.values() for r, _ in b if r in self.sched._attempts]
        for worker, cancels in d.cancel.items():
            agent = self.agents[worker]
            for ref, _ in cancels:
                self.cancelled(worker, ref)
                if ref in agent.running:
                    agent.cancelling.add(ref)  # it stops in a later step (``stop``)
        for name, _ in d.lost_workers:
            self.stopping = {r: s for r, s in self.stopping.items() if s.worker != name}
        if self.stopping:
            event("a cancelled attempt holds its reservation until it is stopped")
        held = {p.key: p.worker for p in self.pool.reservations()}
        self.reserved = {
            ref: state.worker
            for ref, state in self.sched._attempts.items()
            if state.worker is not None and held.get(self.key_of(ref)) == state.worker
        }
        if any(self.sched._leases.lease_of(ref) for ref in self.reserved):
            event("attempts queued under a worker lease")
        assert not twice, f"assigned while already running: {twice}"
        assert not to_gone, f"assigned to deregistered {to_gone}"
        assert not tracked, f"cancelled but still tracked: {tracked}"
        self.check_caps(d)
        return d

    def cancelled(self, worker: str, ref: AttemptRef) -> None:
        """A cancel of an attempt reserved on ``worker`` until this step keeps its
        reservation until the agent reports the attempt ended."""
        if self.reserved.get(ref) != worker or ref in self.stopping:
            return
        placed_at, request = self.dispatched[ref]
        self.stopping[ref] = Stopping(worker, request, placed_at, ref in self.received)

    def key_of(self, ref: AttemptRef) -> AttemptRef:
        """The key of the reservation ``ref`` holds: its own, or its lease's."""
        lease = self.sched._leases.lease_of(ref)
        return ref if lease is None else lease.key

    def count(self, d: Decisions) -> None:
        self.dispatches += sum(len(b) for b in d.assign.values())
        if d.cancel:
            event("cancel decisions")
        if d.lost_workers:
            event("worker lost")
        for run_id in d.finished:
            run = self.sched.runs[run_id]
            event(f"run {run.status}" + (" (infeasible)" if "infeasible" in run.error else ""))

    def all_running(self) -> set[AttemptRef]:
        return {ref for agent in self.agents.values() for ref in agent.running}

    def held(self, *states: str) -> list[tuple[str, AttemptRef]]:
        return [
            (name, ref)
            for name, agent in sorted(self.agents.items())
            if agent.state in states
            for ref in agent.running
        ]

    def check_caps(self, d: Decisions) -> None:
        """Dispatching stops at the caps (adopted work may exceed them, but adds nothing)."""
        if not d.assign:
            return
        cap = self.config.max_parallel
        assert cap is None or self.sched.in_flight <= cap, (self.sched.in_flight, cap)
        for run_id in {a.ref.run_id for batch in d.assign.values() for a in batch}:
            run = self.sched.runs[run_id]
            limit = run.submit.options.max_parallel
            assert limit is None or run.in_flight <= limit, (run_id, run.in_flight, limit)

    # -- rules -------------------------------------------------------------------------------

    @rule(dag=dags(), options=run_options)
    def submit(self, dag: Dag, options: RunOptions) -> None:
        self.runs += 1
        self.sched.submit(Submit(run_id=f"r{self.runs}", dag=dag, options=options), self.now)
        self.drain()

    def check_heard(self, listed: dict[str, set[AttemptRef]]) -> None:
        """After an agent reported its attempts, each is what the scheduler tracks on it:
        adopted if it had lost track of it, else cancelled (and so dropped by ``drain``)."""
        for name, refs in listed.items():
            stopping = self.agents[name].cancelling
            for ref in refs & stopping:
                assert ref not in self.sched._attempts, f"{ref.key} cancelled, tracked again"
            for ref in (refs & set(self.agents[name].running)) - stopping:
                state = self.sched._attempts.get(ref)
                assert state is not None, f"{name} runs {ref.key}, which nobody tracks"
                assert (state.worker, state.status) == (name, "running"), (ref.key, state.status)

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5]))
    def tick(self, dt: float) -> None:
        self.now += dt
        listed = {n: set(a.running) for n, a in self.agents.items() if a.state == "up"}
        for name in sorted(listed):
            self.beat(name)
        self.drain()
        self.check_heard(listed)

    @precondition(lambda self: self.held("up", "silent"))
    @rule(data=st.data(), ok=st.booleans(), right_shape=st.booleans())
    def outcome(self, data: st.DataObject, ok: bool, right_shape: bool) -> None:
        name, ref = data.draw(st.sampled_from(self.held("up", "silent")))
        self.finish(name, ref, ok, right_shape=right_shape or data.draw(st.booleans()))
        self.drain()

    @precondition(lambda self: self.held("up"))
    @rule(data=st.data(), how=st.sampled_from(["accept", "accept", "reject", "never-received"]))
    def answer(self, data: st.DataObject, how: str) -> None:
        """The agent accepts an assignment, rejects it for lack of capacity, or never got it
        (lost on core NATS before any heartbeat listed it)."""
        name, ref = data.draw(st.sampled_from(self.held("up")))
        agent = self.agents[name]
        state = self.sched._attempts.get(ref)
        if how == "never-received" and state is not None and state.status == "placed":
            agent.drop(ref)
        elif how == "reject" and ref not in agent.accepted:
            agent.drop(ref)
            msg = Reject(ref=ref, worker=name, code="capacity", reason="full")
            self.sched.rejected(msg, self.now)
            self.ended(name, ref)
        else:
            agent.accepted.add(ref)
            if ref in self.sched._attempts:
                self.received.add(ref)
            self.sched.accepted(ref, self.now)
        self.drain()

    @precondition(lambda self: any(a.state != "gone" for a in self.agents.values()))
    @rule(data=st.data(), silent=st.booleans())
    def lose_worker(self, data: st.DataObject, silent: bool) -> None:
        """Silent: its heartbeats stop (it runs on and is lost on a later tick).
        Otherwise it deregisters and stops what it ran."""
        present = sorted(n for n, a in self.agents.items() if a.state != "gone")
        name = data.draw(st.sampled_from(present))
        agent = self.agents[name]
        if silent and agent.state == "up":
            agent.state = "silent"
            return
        agent.state = "gone"
        agent.clear()
        self.sched.worker_left(name, "deregistered", self.now)
        self.drain()

    @precondition(lambda self: any(a.state != "up" for a in self.agents.values()))
    @rule(data=st.data(), restarted=st.booleans(), by_heartbeat=st.booleans())
    def rejoin(self, data: st.DataObject, restarted: bool, by_heartbeat: bool) -> None:
        away = sorted(n for n, a in self.agents.items() if a.state != "up")
        name = data.draw(st.sampled_from(away))
        agent = self.agents[name]
        if restarted or agent.state == "gone":
            self.restarts += 1
            agent.started_at = self.restarts
            agent.clear()
        agent.state = "up"
        listed = {name: set(agent.running)}
        if by_heartbeat:
            self.beat(name)
        else:
            self.register(name)
        self.drain()
        self.check_heard(listed)

    @precondition(lambda self: any(r.status == "running" for r in self.sched.runs.values()))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        running = sorted(r for r, run in self.sched.runs.items() if run.status == "running")
        run_id = data.draw(st.sampled_from(running))
        assert self.sched.cancel_run(run_id, "test", self.now)
        self.drain()

    @precondition(lambda self: any(a.cancelling for a in self.agents.values()))
    @rule(data=st.data(), quietly=st.booleans())
    def stop(self, data: st.DataObject, quietly: bool) -> None:
        """An agent stops a cancelled attempt: it reports its outcome, or just no longer
        lists it (its outcome lost, say); a silent agent's heartbeats do not arrive."""
        held = sorted(
            ((n, r) for n, a in self.agents.items() for r in a.cancelling), key=lambda x: x[1].key
        )
        name, ref = data.draw(st.sampled_from(held))
        if quietly:
            self.agents[name].drop(ref)
        else:
            self.report_cancelled(name, ref)
        self.drain()

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def scheduler_validates_its_own_state(self) -> None:
        self.sched.validate_state()

    @invariant()
    def no_worker_beyond_capacity(self) -> None:
        used: dict[str, list[float]] = {}
        requests = {
            self.key_of(ref): state.node.request for ref, state in self.sched._attempts.items()
        }
        requests |= {self.key_of(ref): stop.request for ref, stop in self.stopping.items()}
        for ref, req in requests.items():  # one reservation per lease, however many members
            placement = self.pool.reservation(ref)
            if placement is None:
                continue
            total = used.setdefault(placement.worker, [0.0, 0.0, 0.0])
            total[0] += req.cpu
            total[1] += req.ram_mb
            total[2] += req.gpus
        for name in self.pool.workers:
            u = self.pool.usage(name)
            spec = self.agents[name].spec
            cpu, ram, gpus = used.get(name, [0.0, 0.0, 0.0])
            assert cpu <= spec.cpu + EPS, f"{name}: {cpu} cpu reserved of {spec.cpu}"
            assert ram <= spec.ram_mb, f"{name}: {ram} MB reserved of {spec.ram_mb}"
            assert gpus <= len(spec.gpus) + EPS, f"{name}: {gpus} gpus of {len(spec.gpus)}"
            assert u.cpu_free >= -EPS
            assert u.ram_free_mb >= 0
            assert all(d.free >= -EPS for d in u.devices)
            assert u.cpu_reserved == cpu or abs(u.cpu_reserved - cpu) < 1e-6

    @invariant()
    def reservations_are_the_tracked_attempts(self) -> None:
        held = {p.key: p.worker for p in self.pool.reservations()}
        tracked = {ref: state.worker for ref, state in self.sched._attempts.items()}
        stopping = {ref: stop.worker for ref, stop in self.stopping.items()}
        assert not tracked.keys() & stopping.keys(), "cancelled attempts tracked again"
        expected = {self.key_of(ref): worker for ref, worker in (tracked | stopping).items()}
        assert held == expected, f"reserved {held} but tracking {tracked}, stopping {stopping}"
        for ref, state in self.sched._attempts.items():
            assert state.ref == ref
            assert state.status in IN_FLIGHT, (ref.key, state.status)
        for name, info in self.sched.workers.items():
            for ref in info.attempts:
                assert self.sched._attempts[ref].worker == name

    @invariant()
    def in_flight_counts_agree(self) -> None:
        total = 0
        for run in self.sched.runs.values():
            flying = sum(1 for s in run.nodes.values() if s.status in IN_FLIGHT)
            left = sum(1 for s in run.nodes.values() if s.status not in TERMINAL_NODE)
            assert run.in_flight == flying, run.run_id
            assert run.remaining == left, run.run_id
            total += flying
        assert self.sched.in_flight == total == len(self.sched._attempts)

    @invariant()
    def every_live_run_can_make_progress(self) -> None:
        queued = {id(s) for s in self.sched.queued()}
        delayed = {id(e[2]) for e in self.sched._delayed if e[1] == e[2].seq}
        for run in self.sched.runs.values():
            if run.status in TERMINAL_RUN:
                assert all(s.done for s in run.nodes.values()), run.run_id
                assert run.in_flight == 0
                continue
            assert run.in_flight or any(s.status == "ready" for s in run.nodes.values()), (
                f"{run.run_id} is running with nothing in flight and nothing ready: "
                f"{ {s.id: s.status for s in run.nodes.values()} }"
            )
            for s in run.nodes.values():
                if s.status == "pending":
                    assert s.waiting > 0, f"{run.run_id}/{s.id} pending with nothing to wait for"
                if s.status == "ready":
                    assert id(s) in queued | delayed, f"{run.run_id}/{s.id} ready but not queued"

    # -- the end --------------------------------------------------------------------------------

    def teardown(self) -> None:
        if not hasattr(self, "sched"):
            return
        event(f"dispatches before teardown: {min(self.dispatches, 10) // 5 * 5}+")
        for name, agent in sorted(self.agents.items()):
            if agent.state != "up":
                self.restarts += 1
                agent.started_at = self.restarts
                agent.clear()
                agent.state = "up"
                self.register(name)
        self.drain()
        self.finish_runs()
        self.stop_cancelled()
        stuck = {r: run.status for r, run in self.sched.runs.items() if run.status == "running"}
        assert not stuck, f"runs never ended: {stuck}"
        assert self.pool.reservations() == []
        assert self.sched.in_flight == 0
        assert not self.sched._attempts
        for name in self.pool.workers:
            u = self.pool.usage(name)
            assert (u.cpu_free, u.ram_free_mb, u.reservations) == (u.cpu, u.ram_mb, 0)
            assert all(d.free == 1.0 for d in u.devices)

    def finish_runs(self) -> None:
        for _ in range(100):
            if all(r.status in TERMINAL_RUN for r in self.sched.runs.values()):
                break
            self.now += 1.0
            for name in sorted(self.agents):
                self.beat(name)
            self.drain()
            for name, ref in self.held("up"):
                self.finish(name, ref, ok=True)
            self.drain()

    def stop_cancelled(self) -> None:
        """Every agent stops what it was asked to and reports it; an assignment it never
        received is known ended once heartbeats have not listed it past the grace."""
        for name, agent in sorted(self.agents.items()):
            for ref in sorted(agent.cancelling, key=lambda r: r.key):
                self.report_cancelled(name, ref)
        self.drain()
        for _ in range(int(GRACE) + 2):
            if not self.stopping:
                break
            self.now += 1.0
            for name in sorted(self.agents):
                self.beat(name)
            self.drain()
        assert not self.stopping, f"never reported ended: {[r.key for r in self.stopping]}"


SchedulerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestSchedulerMachine = SchedulerMachine.TestCase
