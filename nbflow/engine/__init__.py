"""The engine room: task specs, tracing, the scheduler, backends, events and runs."""
