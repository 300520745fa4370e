"""ViT-style pre-norm transformer layers over token sequences (Sec. 3.2; Dosovitskiy et al.)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Attention", "Block", "TransformerStack", "init_weights"]


class Attention(nn.Module):
    """Multi-head self-attention, ``[N, L, W] -> [N, L, W]`` (qkv with bias, as in ViT)."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if heads <= 0 or width % heads:
            raise ValueError(f"num_heads={heads} must divide the token width {width}")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        n, length, width = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [N, heads, L, W/heads]
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj(out.transpose(1, 2).reshape(n, length, width))


class Block(nn.Module):
    """``x + Attn(LN(x))`` then ``x + MLP(LN(x))``; MLP = Linear, GELU, Linear."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, width),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerStack(nn.Module):
    """``depth`` blocks, optionally followed by a LayerNorm; depth 0 is the identity."""

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        dropout: float = 0.0,
        final_norm: bool = False,
    ) -> None:
        super().__init__()
        if depth < 0:
            raise ValueError(f"a transformer needs depth >= 0, got {depth}")
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width) if final_norm and depth > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``[N, L, W] -> [N, L, W]``."""
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def init_weights(module: nn.Module, residual_scale: float = 1.0) -> None:
    """MAE/ViT initialisation: xavier-uniform linear weights, zero biases, unit LayerNorms;
    the last linear layer of every residual branch (attention ``proj``, MLP output) is then
    multiplied by ``residual_scale`` (< 1 starts each block closer to the identity)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, Block):
            m.attn.proj.weight.data.mul_(residual_scale)
            m.mlp[-2].weight.data.mul_(residual_scale)
