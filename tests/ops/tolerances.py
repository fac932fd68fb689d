"""Per-dtype tolerances, stated once for every op test: (atol, rtol) against a float64 reference."""

import torch

TOLERANCES = {
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}

# Attention sums many products: its float32 error grows with context length.
ATTENTION_TOLERANCES = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (3e-3, 3e-3),
    torch.bfloat16: (2e-2, 2e-2),
}
