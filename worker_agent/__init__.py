"""The worker agent: inventory, advertising, and execution of assigned taskiq tasks."""
