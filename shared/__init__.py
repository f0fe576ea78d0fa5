"""What the coordinator, the agents and the client share: the resource model, the DAG,
the wire (messages, subjects, label keys) and NATS connection settings.

Imports nothing of ours and no taskiq, so either process can load any part of it.
"""
