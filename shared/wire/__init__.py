"""The wire: every message, subject and taskiq label key the processes exchange."""
