"""Benchmarks: stunnerd against coturn per server CPU-second, monitoring cost, memory.

Run with ``nox -s bench`` (``-- --quick`` for a short run, ``-- --profile`` for py-spy).
"""
