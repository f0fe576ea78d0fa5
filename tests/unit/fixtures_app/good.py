from taskiq import InMemoryBroker

broker = InMemoryBroker()
not_a_broker = 42


class Holder:
    broker = broker


@broker.task
def double(x: int) -> int:
    return 2 * x
