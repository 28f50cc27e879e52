"""Seams onto library internals: one module per library; each private hook used is named here and
has a contract test (tests/unit/test_compat_*.py). Imported only by infra/.
"""
