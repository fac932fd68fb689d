"""Triton kernels (installed as inference_pio.kernels), one module per op family."""
