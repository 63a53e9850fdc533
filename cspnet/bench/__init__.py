"""Benchmark harness: `cspnet bench` (harness.py measures, report.py writes JSON / markdown / PNG)."""

from cspnet.bench.harness import BenchConfig, Variant, expand_variants, parse_variant, run_bench

__all__ = ["BenchConfig", "Variant", "expand_variants", "parse_variant", "run_bench"]
