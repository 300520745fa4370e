"""The method contract: checks every registered method must pass.

Used by fsarbench's own test suite (parametrised over the registry) and by the tests a
scaffolded third-party method ships. Each check raises ``AssertionError`` with a message
saying what broke. A method may set the class attribute ``CONTRACT_HPARAMS`` (a dict) to
hyper-parameters that make it small enough for these checks; :func:`contract_hparams`
adds a run's own hyper-parameters on top (a head can break the contract only at some
settings). Methods with
``uses_class_names`` get ``CONTRACT_CLASS_NAMES`` of the episodes' global classes.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch

from fsarbench.methods import EpisodeBatch, FewShotMethod, episode_class_names, match_keywords
from fsarbench.pairs import class_mean, one_hot_weights
from fsarbench.registry import create_method_unchecked, method_info
from fsarbench.state import state_gather, state_map

__all__ = [
    "CONTRACT_CHECKS",
    "contract_hparams",
    "make_contract_method",
    "random_batch",
    "run_contract",
]

FEATURE_DIM = 64
SEQ_LEN = 8
NUM_TRAIN_CLASSES = 7
CONTRACT_CLASS_NAMES = (
    "archery",
    "bowling",
    "juggling balls",
    "surfing water",
    "skiing slalom",
    "diving cliff",
    "rowing",
)


@dataclasses.dataclass(frozen=True)
class _Setting:
    """What the checks build: hyper-parameters, and the sizes/dataset a run uses (``None``:
    the contract's small size, with the class's ``CONTRACT_HPARAMS``)."""

    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    feature_dim: int | None = None
    seq_len: int | None = None
    dataset: str | None = None

    @property
    def dims(self) -> tuple[int, int]:
        """``(T, D)`` of the checks' features."""
        return self.seq_len or SEQ_LEN, self.feature_dim or FEATURE_DIM


_SETTING: contextvars.ContextVar[_Setting | None] = contextvars.ContextVar(
    "contract_setting", default=None
)


def _setting() -> _Setting:
    return _SETTING.get() or _Setting()


@contextlib.contextmanager
def contract_hparams(
    hparams: dict[str, Any],
    *,
    feature_dim: int | None = None,
    seq_len: int | None = None,
    dataset: str | None = None,
) -> Iterator[None]:
    """Within the block, every check builds its method with ``hparams`` (the ones a run or
    ``check-method --hparams`` uses). At the contract's small size they go over the class's
    ``CONTRACT_HPARAMS``; with a run's ``feature_dim`` (and ``seq_len``, ``dataset``: its
    per-dataset presets) the method is built as the run builds it, ``CONTRACT_HPARAMS``
    aside (a hyper-parameter tied to the feature size is valid there, not at 64)."""
    token = _SETTING.set(_Setting(dict(hparams), feature_dim, seq_len, dataset))
    try:
        yield
    finally:
        _SETTING.reset(token)


_INSTANCE: contextvars.ContextVar[FewShotMethod | None] = contextvars.ContextVar(
    "contract_instance", default=None
)


@contextlib.contextmanager
def contract_instance(method: FewShotMethod | None) -> Iterator[None]:
    """Within the block (``method`` given), every check uses a copy of ``method`` instead of
    building one by name: a method instantiated directly, with its own weights and its
    constructor's own arguments."""
    token = _INSTANCE.set(method)
    try:
        yield
    finally:
        _INSTANCE.reset(token)


def make_contract_method(
    name: str, *, dtype: torch.dtype = torch.float64, seed: int = 0
) -> FewShotMethod:
    """Method ``name`` at the contract's small size, in ``dtype`` (or as an enclosing
    :func:`contract_hparams` says; a copy of :func:`contract_instance`'s method)."""
    torch.manual_seed(seed)
    instance = _INSTANCE.get()
    if instance is not None:
        return copy.deepcopy(instance).to(device="cpu", dtype=dtype)
    setting = _setting()
    small = setting.feature_dim is None
    hp = dict(getattr(method_info(name).cls, "CONTRACT_HPARAMS", {})) if small else {}
    hp.update(setting.hparams)
    seq_len, feature_dim = setting.dims
    method = create_method_unchecked(
        name,
        feature_dim=feature_dim,
        seq_len=seq_len,
        num_train_classes=NUM_TRAIN_CLASSES,
        dataset=setting.dataset,
        **hp,
    )
    return method.to(dtype)


def random_batch(
    *,
    batch: int = 3,
    way: int = 5,
    shot: int = 2,
    queries: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    shuffle_support: bool = True,
    zeros: bool = False,
    names: bool = False,
) -> EpisodeBatch:
    """Episodes of non-negative random features (like post-ReLU CNN features), with the
    support in a random, non class-major order and global classes for auxiliary losses;
    ``names``: with ``class_names`` from ``CONTRACT_CLASS_NAMES``."""
    g = torch.Generator().manual_seed(seed)
    ns, nq = way * shot, way * queries
    shape = (batch, ns + nq, *_setting().dims)
    feats = (
        torch.zeros(shape, dtype=dtype) if zeros else torch.rand(shape, generator=g, dtype=dtype)
    )
    s_lab = torch.arange(way).repeat_interleave(shot).expand(batch, ns).clone()
    q_lab = torch.arange(way).repeat_interleave(queries).expand(batch, nq).clone()
    if shuffle_support:
        perm = torch.stack([torch.randperm(ns, generator=g) for _ in range(batch)])
        s_lab = s_lab.gather(1, perm)
    classes = torch.stack(
        [torch.randperm(NUM_TRAIN_CLASSES, generator=g)[:way] for _ in range(batch)]
    )
    return EpisodeBatch(
        support=feats[:, :ns],
        support_labels=s_lab,
        query=feats[:, ns:],
        query_labels=q_lab,
        support_classes=classes.gather(1, s_lab),
        query_classes=classes.gather(1, q_lab),
        way=way,
        class_names=episode_class_names(classes, CONTRACT_CLASS_NAMES) if names else None,
    )


def _batch(method: FewShotMethod, **kwargs) -> EpisodeBatch:
    """:func:`random_batch` with class names for methods that use them."""
    return random_batch(names=method.uses_class_names, **kwargs)


def _names(batch: EpisodeBatch, method: FewShotMethod) -> dict:
    """``class_names=`` for a direct ``match`` call, where the method takes it."""
    if "class_names" in match_keywords(type(method)) and batch.class_names is not None:
        return {"class_names": batch.class_names}
    return {}


def _logits(method: FewShotMethod, batch: EpisodeBatch) -> torch.Tensor:
    with torch.no_grad():
        return method(batch).logits


def _close(
    a: torch.Tensor, b: torch.Tensor, what: str, rtol: float = 1e-7, atol: float = 1e-9
) -> None:
    if a.shape != b.shape or not torch.allclose(a, b, rtol=rtol, atol=atol):
        diff = (a - b).abs().max().item() if a.shape == b.shape else "shape"
        raise AssertionError(f"{what}: max difference {diff}")


#: (way, shot, queries) the shape check tries: the default, the 1-shot and 1-query corners
#: (one support or query per class: a std over them is NaN) and another way and shot.
SHAPE_SETTINGS = ((5, 2, 2), (5, 1, 1), (3, 1, 2), (5, 5, 1))


def check_shapes(name: str) -> None:
    method = make_contract_method(name).eval()
    for way, shot, queries in SHAPE_SETTINGS:
        where = f"{way}-way {shot}-shot, {queries} {'query' if queries == 1 else 'queries'}/class"
        out = method(_batch(method, way=way, shot=shot, queries=queries))
        assert out.logits.shape == (3, way * queries, way), (
            f"{where}: logits must be [B, Nq, way], got {tuple(out.logits.shape)}"
        )
        dtype = out.logits.dtype
        assert not (dtype.is_complex or dtype == torch.bool), (
            f"{where}: logits must be real scores (float or int), got {dtype}"
        )
        assert torch.isfinite(out.logits).all(), f"{where}: logits must be finite"
        for key, value in out.losses.items():
            assert value.dim() == 0, f"{where}: loss {key!r} must be a scalar"


def check_eval_determinism(name: str) -> None:
    method = make_contract_method(name).eval()
    batch = _batch(method)
    _close(_logits(method, batch), _logits(method, batch), "two eval() calls differ", 0, 0)


def check_support_order_invariance(name: str) -> None:
    method = make_contract_method(name).eval()
    batch = _batch(method)
    perm = torch.randperm(batch.support.shape[1], generator=torch.Generator().manual_seed(1))
    shuffled = dataclasses.replace(
        batch,
        support=batch.support[:, perm],
        support_labels=batch.support_labels[:, perm],
        support_classes=batch.support_classes[:, perm],
    )
    _close(_logits(method, batch), _logits(method, shuffled), "support order changed the logits")


def check_query_order_equivariance(name: str) -> None:
    """Permuting an episode's queries permutes their logits: at 2 queries per class, and at
    1 (the evaluator's episodes, queries in class order; a head adding a term by query
    position only when there are ``way`` queries passed and ranked first)."""
    method = make_contract_method(name).eval()
    for queries in (2, 1):
        _check_query_order_at(method, queries)


def _check_query_order_at(method: FewShotMethod, queries: int) -> None:
    batch = _batch(method, queries=queries)
    perm = torch.randperm(batch.query.shape[1], generator=torch.Generator().manual_seed(2))
    shuffled = dataclasses.replace(
        batch,
        query=batch.query[:, perm],
        query_labels=batch.query_labels[:, perm],
        query_classes=batch.query_classes[:, perm],
    )
    _close(
        _logits(method, batch)[:, perm],
        _logits(method, shuffled),
        f"permuting queries did not permute their logits ({queries} per class)",
    )


def check_queries_scored_alone(name: str) -> None:
    """A query's logits do not depend on the episode's other queries: fsarbench's protocol,
    as every published FSAR table, is inductive (a head sharing information across the
    test queries, e.g. a Sinkhorn assignment over them, gained ~4 points unmarked). Checked
    by drawing new features for every query but the first of each class."""
    method = make_contract_method(name).eval()
    batch = _batch(method)
    queries = batch.query.shape[1] // batch.way
    kept = torch.arange(0, batch.query.shape[1], queries)  # the first query of each class
    others = torch.rand(
        batch.query.shape, generator=torch.Generator().manual_seed(3), dtype=batch.query.dtype
    )
    others[:, kept] = batch.query[:, kept]
    changed = dataclasses.replace(batch, query=others)
    alone, beside = _logits(method, batch)[:, kept], _logits(method, changed)[:, kept]
    if not torch.allclose(alone, beside, rtol=1e-7, atol=1e-9):
        raise AssertionError(
            "a query's logits changed when the episode's other queries changed (max difference"
            f" {(alone - beside).abs().max().item():.3g}): fsarbench scores each query on its"
            " own, as the published tables do; a transductive head's numbers are not"
            " comparable with them"
        )


def check_inputs_untouched(name: str) -> None:
    """Evaluating must not write into the features given: the evaluator hands ``encode``
    views of the caller's tensor, and an ``encode`` doing ``features.sub_(...)`` changed
    every later number over that tensor, other methods' too (93.40, then 91.00, 89.70)."""
    method = make_contract_method(name).eval()
    batch = _batch(method)
    pool = torch.cat([batch.support, batch.query], 1).flatten(0, 1)  # [B*(Ns+Nq), T, D]
    before = pool.clone()
    inputs = (batch.support.clone(), batch.query.clone())
    with torch.no_grad():
        method.encode(pool)
        _logits(method, batch)
    wrote = not torch.equal(pool, before) or not all(
        torch.equal(a, b) for a, b in zip(inputs, (batch.support, batch.query))
    )
    assert not wrote, (
        "evaluating wrote into its input features (an in-place op such as x.sub_(...) or "
        "x += ... on what encode or forward is given): work on a copy (x = x - ...)"
    )


def check_forward_is_match_of_encode(name: str) -> None:
    method = make_contract_method(name).eval()
    batch = _batch(method)
    b, ns = batch.support.shape[:2]
    nq = batch.query.shape[1]
    with torch.no_grad():
        pool = torch.cat([batch.support, batch.query], 1).flatten(0, 1)  # [B*(Ns+Nq), T, D]
        state = method.encode(pool)
        idx = torch.arange(b * (ns + nq)).reshape(b, ns + nq)
        out = method.match(
            state_gather(state, idx[:, :ns]),
            batch.support_labels,
            state_gather(state, idx[:, ns:]),
            batch.way,
            **_names(batch, method),
        )
    _close(_logits(method, batch), out.logits, "forward(batch) != match(encode(.))")


def check_batch_equals_singles(name: str) -> None:
    method = make_contract_method(name).eval()
    batch = _batch(method)
    singles = [
        _logits(
            method,
            EpisodeBatch(
                batch.support[i : i + 1],
                batch.support_labels[i : i + 1],
                batch.query[i : i + 1],
                None,
                None,
                None,
                batch.way,
                None if batch.class_names is None else batch.class_names[i : i + 1],
            ),
        )
        for i in range(batch.batch_size)
    ]
    _close(_logits(method, batch), torch.cat(singles), "a batch of episodes != single episodes")


def check_gradients_reach_parameters(name: str) -> None:
    method = make_contract_method(name).train()
    batch = _batch(method)
    for stage in method.training_stages():
        params = list(stage.parameters())
        method.zero_grad(set_to_none=True)
        feats = [batch.support.clone().requires_grad_(), batch.query.clone().requires_grad_()]
        staged = dataclasses.replace(batch, support=feats[0], query=feats[1])
        losses = stage.loss(staged)
        total = sum(losses.values())
        assert torch.isfinite(total), f"stage {stage.name!r}: loss is not finite"
        total.backward()
        if not params:
            assert feats[0].grad is not None and feats[1].grad is not None, (
                f"stage {stage.name!r}: no gradient reaches the input features"
            )
            continue
        named = {id(p): n for n, p in method.named_parameters()}
        missing = [
            named.get(id(p), "?") for p in params if p.grad is None or not p.grad.abs().sum() > 0
        ]
        assert not missing, f"stage {stage.name!r}: no gradient reaches {missing}"


def check_zero_features(name: str) -> None:
    method = make_contract_method(name).eval()
    out = _logits(method, _batch(method, zeros=True))
    assert not torch.isnan(out).any(), "all-zero features give NaN logits"


#: Shots the claims of a head (``pairwise``, pool products, ``match_indexed``) are checked
#: at: the published settings (1, 3, 5) and 2. They were checked at 1 and 2 shots only, and
#: a head pairwise at small shots alone was scored through its pair table at 5-shot.
CLAIM_SHOTS = (1, 2, 3, 5)


def check_pairwise_logits(name: str) -> None:
    """Where a head says it is pairwise, its logits are the class means of its pair scores."""
    method = make_contract_method(name).eval()
    for shot in CLAIM_SHOTS:  # the evaluator trusts the claim at every shot it is made for
        if not method.pairwise(shot):
            continue
        batch = _batch(method, shot=shot)
        b, ns = batch.support.shape[:2]
        with torch.no_grad():
            scores = method.pair_logits(
                method.encode_episodes(batch.query), method.encode_episodes(batch.support)
            )
        assert scores.shape == (b, batch.query.shape[1], ns), (
            f"pair_logits must be [B, Nq, Ns], got {tuple(scores.shape)}"
        )
        _close(
            _logits(method, batch),
            class_mean(scores, batch.support_labels, batch.way),
            f"{shot}-shot logits != class means of pair_logits (pairwise({shot}) is True)",
        )


def check_support_means(name: str) -> None:
    """Where a head says it uses only class means of the support, passing those means as a
    support of ``way`` videos gives the same logits."""
    method = make_contract_method(name).eval()
    if not method.support_means:
        return
    batch = _batch(method, shot=3)
    weights = one_hot_weights(batch.support_labels, batch.way, batch.support.dtype)
    with torch.no_grad():
        support = method.encode_episodes(batch.support)
        means = state_map(
            lambda t: (weights @ t.flatten(2)).view(*weights.shape[:2], *t.shape[2:]), support
        )
        query = method.encode_episodes(batch.query)
        labels = torch.arange(batch.way).expand(batch.batch_size, -1)
        by_means = method.match(means, labels, query, batch.way, **_names(batch, method)).logits
    _close(_logits(method, batch), by_means, "logits from support class means differ")


def check_pool_products(name: str) -> None:
    """Where a head has pool products, episodes given as pool positions (products looked
    up) get the logits of gathering their encoded videos, at each of :data:`CLAIM_SHOTS`
    above 1 shot."""
    method = make_contract_method(name).eval()
    for shot in CLAIM_SHOTS[1:]:
        _check_pool_products_at(method, shot)


def _check_pool_products_at(method: FewShotMethod, shot: int) -> None:
    batch = _batch(method, shot=shot)
    b, ns = batch.support.shape[:2]
    if method.pool_products_bytes(b * (ns + batch.query.shape[1]), shot) is None:
        return
    with torch.no_grad():
        pool = method.encode(torch.cat([batch.support, batch.query], 1).flatten(0, 1))
        positions = torch.arange(b * (ns + batch.query.shape[1])).view(b, -1)
        support, query = positions[:, :ns], positions[:, ns:]
        pooled = method.match_pool(
            pool, method.pool_products(pool), support, batch.support_labels, query, batch.way
        ).logits
    _close(
        _logits(method, batch), pooled, f"{shot}-shot logits from pool products differ from match's"
    )


@contextlib.contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """One intra-op thread inside the block: a chunked and a whole-batch ``bmm`` agree to
    the bit there, while with more threads MKL may split the two over its threads in other
    ways (seen at 3-4 threads on AMD, and on Intel CPUs), which no head controls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_indexed_match(name: str) -> None:
    """Where a head gathers its episodes itself, episodes given as pool positions get the
    logits of gathering their encoded videos for ``match``, to the bit (at one intra-op
    thread: see :func:`_one_intra_op_thread`)."""
    method = make_contract_method(name).eval()
    if not method.gathers_episodes:
        return
    for shot in CLAIM_SHOTS[1:]:
        _check_indexed_match_at(method, shot)


def _check_indexed_match_at(method: FewShotMethod, shot: int) -> None:
    batch = _batch(method, shot=shot)
    b, ns = batch.support.shape[:2]
    with torch.no_grad(), _one_intra_op_thread():
        pool = method.encode(torch.cat([batch.support, batch.query], 1).flatten(0, 1))
        positions = torch.arange(b * (ns + batch.query.shape[1])).view(b, -1)
        support, query = positions[:, :ns], positions[:, ns:]
        indexed = method.match_indexed(pool, support, batch.support_labels, query, batch.way)
        gathered = method.match(
            state_gather(pool, support), batch.support_labels, state_gather(pool, query), batch.way
        )
    if not torch.equal(indexed.logits, gathered.logits):
        _close(indexed.logits, gathered.logits, "match_indexed's logits differ from match's")
        raise AssertionError("match_indexed's logits are close to match's but not bit-identical")


CONTRACT_CHECKS: dict[str, Callable[[str], None]] = {
    "shapes": check_shapes,
    "inputs_untouched": check_inputs_untouched,
    "eval_determinism": check_eval_determinism,
    "support_order_invariance": check_support_order_invariance,
    "query_order_equivariance": check_query_order_equivariance,
    "queries_scored_alone": check_queries_scored_alone,
    "forward_is_match_of_encode": check_forward_is_match_of_encode,
    "batch_equals_singles": check_batch_equals_singles,
    "gradients_reach_parameters": check_gradients_reach_parameters,
    "zero_features": check_zero_features,
    "pairwise_logits": check_pairwise_logits,
    "support_means": check_support_means,
    "pool_products": check_pool_products,
    "indexed_match": check_indexed_match,
}


def run_contract(name: str) -> None:
    """Run every contract check on method ``name``."""
    for check in CONTRACT_CHECKS.values():
        check(name)
