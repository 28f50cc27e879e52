"""Seams onto library internals: one module per library (`eventsourcing.py`, `faststream.py`,
`psycopg_pool.py`); each private hook used is named there and has a contract test
(tests/unit/test_compat_*.py and, where it needs a server, tests/integration/test_seam_*.py).
Imported only by infra/ and the wiring (gateways/bootstrap.py).
"""
