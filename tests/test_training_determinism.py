"""Same seed, same weights: training must not depend on how threads race."""

from __future__ import annotations

import torch

from fsarbench_sgtm.autoencoder import PositionalEmbedding


def _table_grad(embed: PositionalEmbedding, tokens: torch.Tensor, positions: torch.Tensor):
    embed.zero_grad()
    (
        embed(tokens, positions) * torch.linspace(-1, 1, tokens.numel()).view_as(tokens)
    ).sum().backward()
    return embed.table.grad.clone()


def test_positional_embedding_gradient_is_bit_reproducible_with_threads():
    """Many rows look up the same positions; their gradients must add up in a fixed order
    (indexing's backward accumulated them in thread order: weights differed in the last
    bits from run to run, and so did SGTM's accuracies)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        torch.manual_seed(0)
        embed = PositionalEmbedding(16, 384)
        tokens = torch.randn(512, 8, 384)
        positions = torch.stack([torch.randperm(16)[:8] for _ in range(512)])
        first = _table_grad(embed, tokens, positions)
        for _ in range(10):
            assert torch.equal(_table_grad(embed, tokens, positions), first)
    finally:
        torch.set_num_threads(threads)


def test_positional_embedding_adds_each_tokens_row():
    torch.manual_seed(0)
    embed = PositionalEmbedding(6, 4)
    tokens = torch.randn(2, 3, 4)
    positions = torch.tensor([[5, 0, 2], [1, 1, 4]])
    expected = tokens + embed.table.detach()[positions]
    assert torch.equal(embed(tokens, positions).detach(), expected)
