"""Node executors run by the worker; may import domain and infra."""
