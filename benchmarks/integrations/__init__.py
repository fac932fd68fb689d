"""Benchmarks of the bridges to other libraries (transformers)."""
