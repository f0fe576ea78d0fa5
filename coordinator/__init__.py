"""The coordinator: the live pool, placement, run state, the NATS service and the client."""

from coordinator.placement.outcome import Candidate, CannotPlace, Placement
from coordinator.pool import ResourceAwareWorkerPool

__all__ = ["Candidate", "CannotPlace", "Placement", "ResourceAwareWorkerPool"]
