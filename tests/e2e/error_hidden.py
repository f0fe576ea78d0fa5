"""An exception class that only the agent imports: its client cannot rebuild it."""


class HiddenError(ValueError):
    pass
