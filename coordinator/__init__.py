"""The coordinator process: the pure core (placement, scheduling) and its NATS service."""
