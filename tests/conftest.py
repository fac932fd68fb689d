"""Shared test set-up. Triton runs through its interpreter when no GPU is visible; that must be
decided before any Triton kernel module is imported."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
