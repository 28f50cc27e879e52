"""The consumers that drive execution: matching (task queues), timers, the worker, node executors."""
