"""DeepSeek's multi-head latent attention: the module and the attention over the paged latent cache."""

from .latent_attention import MultiHeadLatentAttention
from .paged_latent_attention import kernels_support, latent_attention_torch, paged_latent_attention

__all__ = ["MultiHeadLatentAttention", "kernels_support", "latent_attention_torch", "paged_latent_attention"]
