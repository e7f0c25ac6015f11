"""Benchmarks and resilience runs; figures are printed and recorded in RESULTS.md."""
