"""Bridges to other libraries: transformers (drop-in kernels), Parlant (NLP services)."""
