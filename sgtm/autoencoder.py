"""Positional embedding of tokens at their true positions, and the decoder (Sec. 3.2, eq. 3-4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsarbench_sgtm.tokens import sincos_table
from fsarbench_sgtm.transformer import TransformerStack

__all__ = ["PositionalEmbedding", "gather_tokens", "TokenDecoder"]


def gather_tokens(tokens: Tensor, index: Tensor) -> Tensor:
    """``tokens [N, M, P]`` at ``index [N, V]`` -> ``[N, V, P]``."""
    return tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[-1]))


class PositionalEmbedding(nn.Module):
    """One embedding per token position of the full video, ``[M, P]`` with ``M = T*D/P``.

    ``kind="learned"``: a parameter (ViT), initialised N(0, 0.02²); ``"sincos"``: fixed.
    """

    def __init__(self, num_tokens: int, width: int, kind: str = "learned") -> None:
        super().__init__()
        self.num_tokens = num_tokens
        if kind == "learned":
            self.table = nn.Parameter(torch.empty(num_tokens, width))
            nn.init.trunc_normal_(self.table, std=0.02)
        elif kind == "sincos":
            self.register_buffer("table", sincos_table(num_tokens, width), persistent=False)
        else:
            raise ValueError(
                f"positional embedding kind must be 'learned' or 'sincos', not {kind!r}"
            )

    def forward(self, tokens: Tensor, positions: Tensor | None = None) -> Tensor:
        """Add the embedding of each token's position in the full video.

        Args:
            tokens: ``[N, L, P]``.
            positions: ``[N, L]`` long, true positions in ``0..M-1``; ``None`` means ``0..L-1``.
        """
        if positions is None:
            return tokens + self.table[: tokens.shape[1]]
        # A one-hot product instead of ``table[positions]``: the same values (one 1.0 per row),
        # but its backward is a matrix product, while indexing's backward accumulates rows
        # with several threads in a varying order (a run's weights then differed in the last
        # bits from run to run, and so did a cell's accuracy).
        onehot = F.one_hot(positions, self.table.shape[0]).to(self.table.dtype)
        return tokens + onehot @ self.table


class TokenDecoder(nn.Module):
    """Decoder of eq. 4: encoder output at the visible positions, a learnable mask token at
    the masked ones, fixed sinusoidal positions, transformer layers, then a linear prediction
    of every token -> ``[N, M, P]``."""

    def __init__(
        self,
        num_tokens: int,
        token_dim: int,
        width: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.embed = nn.Linear(token_dim, width) if width != token_dim else nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(width))
        nn.init.normal_(self.mask_token, std=0.02)
        self.pos = PositionalEmbedding(num_tokens, width, "sincos")
        self.blocks = TransformerStack(width, depth, heads, mlp_ratio, dropout, final_norm=True)
        self.pred = nn.Linear(width, token_dim)

    def forward(self, latent: Tensor, visible: Tensor) -> Tensor:
        """``latent [N, V, P]`` at true positions ``visible [N, V]`` -> ``[N, M, P]``."""
        h = self.embed(latent)
        n, _, width = h.shape
        full = self.mask_token.expand(n, self.num_tokens, width)
        # under autocast h is half and the mask token float32: scatter needs one dtype
        full = full.scatter(1, visible[..., None].expand(-1, -1, width), h.to(full.dtype))
        return self.pred(self.blocks(self.pos(full)))
