"""Per-video method states: a tensor, or a dict / tuple / list nesting of tensors.

Every tensor in a state leads with the video dimension(s), so the harness can index, gather,
concatenate and reshape states without knowing what a method stores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

State = Tensor | dict[str, Any] | tuple | list

__all__ = [
    "State",
    "state_map",
    "state_gather",
    "state_cat",
    "state_reshape_leading",
    "state_leaves",
]


def state_map(fn: Callable[[Tensor], Tensor], state: State) -> State:
    """Apply ``fn`` to every tensor of ``state``, keeping its structure."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: state_map(fn, v) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(state_map(fn, v) for v in state)
    raise TypeError(f"a method state holds tensors, dicts, tuples or lists, not {type(state)!r}")


def state_leaves(state: State) -> list[Tensor]:
    """All tensors of ``state`` in a fixed order."""
    if isinstance(state, Tensor):
        return [state]
    if isinstance(state, dict):
        return [leaf for k in state for leaf in state_leaves(state[k])]
    return [leaf for v in state for leaf in state_leaves(v)]


def state_gather(
    state: State,
    index: Tensor,
    buffers: dict[tuple[str, int], Tensor] | None = None,
    tag: str = "",
) -> State:
    """Index the leading video dimension: ``[N, ...]`` with ``index [*S]`` -> ``[*S, ...]``.

    With ``buffers`` (a dict kept by the caller across calls), results are written into
    reused tensors keyed by ``(tag, leaf number)``: repeated large gathers then skip fresh
    allocations and their page faults. Such results are overwritten by the next call.
    """
    flat = index.reshape(-1)
    leaf = iter(range(1 << 30))

    def take(t: Tensor) -> Tensor:
        i = next(leaf)
        idx = flat.to(t.device)
        if buffers is None:
            return t.index_select(0, idx).reshape(*index.shape, *t.shape[1:])
        shape = (idx.numel(), *t.shape[1:])
        buf = buffers.get((tag, i))
        if buf is None or buf.shape != shape or buf.dtype != t.dtype or buf.device != t.device:
            buf = buffers[(tag, i)] = torch.empty(shape, dtype=t.dtype, device=t.device)
        torch.index_select(t, 0, idx, out=buf)
        return buf.view(*index.shape, *t.shape[1:])

    return state_map(take, state)


def state_cat(states: Sequence[State]) -> State:
    """Concatenate states along their leading dimension."""
    first = states[0]
    if isinstance(first, Tensor):
        return torch.cat(list(states), 0)
    if isinstance(first, dict):
        return {k: state_cat([s[k] for s in states]) for k in first}
    return type(first)(state_cat([s[i] for s in states]) for i in range(len(first)))


def state_reshape_leading(state: State, n_leading: int, shape: Sequence[int]) -> State:
    """Replace the first ``n_leading`` dimensions of every tensor by ``shape``."""
    return state_map(lambda t: t.reshape(*shape, *t.shape[n_leading:]), state)


def state_class_means(state: State, index: Tensor) -> State:
    """Per-class means of gathered videos without materialising the gather.

    Args:
        state: tensors leading with the video dimension ``[N, ...]``.
        index: ``[B, C, K]`` video indices, ``K`` videos per class.

    Returns:
        tensors leading with ``[B, C]``: the mean over ``K`` of ``state[index]``.
    """
    b, c, k = index.shape
    bags = index.reshape(b * c, k)

    def mean(t: Tensor) -> Tensor:
        flat = t.reshape(t.shape[0], -1)
        out = torch.nn.functional.embedding_bag(bags.to(t.device), flat, mode="mean")
        return out.view(b, c, *t.shape[1:])

    return state_map(mean, state)
