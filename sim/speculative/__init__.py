"""Speculative decoding on the machine model (docs/speculative.md): runners that price every pass
(runners), the checks of a request's options (options), the report (report) and the run (run).

The rule itself (drafters, verify and accept, rollback) is :mod:`golden.speculative`.
"""
