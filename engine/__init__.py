"""The consumers that drive execution: matching, timers, the worker, node executors."""
