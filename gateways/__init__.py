"""The edges: the aiohttp HTTP API, the `linkflow` CLI, and the wiring of every role."""
