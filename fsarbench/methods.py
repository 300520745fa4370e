"""The method plugin API: what a few-shot head receives, returns and declares.

A method is the head alone (no backbone, adapter or data). It splits into a per-video part,
:meth:`FewShotMethod.encode`, and a per-episode part, :meth:`FewShotMethod.match`, so that an
evaluation over thousands of episodes encodes every unique video once.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsarbench.state import State, state_map, state_reshape_leading

__all__ = [
    "EpisodeBatch",
    "MethodOutput",
    "FewShotMethod",
    "TrainingStage",
    "NoConfig",
    "MATCH_KEYWORDS",
    "match_keywords",
    "episode_class_names",
    "label_classes",
]


@dataclass
class EpisodeBatch:
    """A batch of ``B`` episodes of frame features.

    Attributes:
        support: ``[B, Ns, T, D]`` float features of the support videos.
        support_labels: ``[B, Ns]`` long, episode labels in ``0..way-1`` in any order.
        query: ``[B, Nq, T, D]`` float features of the query videos.
        query_labels: ``[B, Nq]`` long episode labels, or ``None`` at inference.
        support_classes: ``[B, Ns]`` long global (meta-train) class ids, for auxiliary losses.
        query_classes: ``[B, Nq]`` long global class ids.
        way: number of classes per episode.
        class_names: ``B`` lists of ``way`` class names (label ``i`` of episode ``b`` is
            ``class_names[b][i]``), filled by the harness only for methods that set
            ``uses_class_names = True``; ``None`` otherwise.
    """

    support: Tensor
    support_labels: Tensor
    query: Tensor
    query_labels: Tensor | None = None
    support_classes: Tensor | None = None
    query_classes: Tensor | None = None
    way: int = 5
    class_names: list[list[str]] | None = None

    def __post_init__(self) -> None:
        if self.support.dim() != 4 or self.query.dim() != 4:
            raise ValueError(
                "EpisodeBatch expects support [B, Ns, T, D] and query [B, Nq, T, D]; got "
                f"{tuple(self.support.shape)} and {tuple(self.query.shape)}. "
                "Add a leading episode dimension with .unsqueeze(0) for a single episode."
            )
        b, ns = self.support.shape[:2]
        if tuple(self.support_labels.shape) != (b, ns):
            raise ValueError(
                f"support_labels must be [B, Ns] = {(b, ns)}, "
                f"got {tuple(self.support_labels.shape)}"
            )
        if self.query.shape[0] != b or self.query.shape[2:] != self.support.shape[2:]:
            raise ValueError(
                f"query {tuple(self.query.shape)} does not match "
                f"support {tuple(self.support.shape)}"
            )
        labels = self.support_labels
        out_of_range = ((labels < 0) | (labels >= self.way)).any()
        counts = torch.stack([(labels == c).sum(1) for c in range(self.way)], 1)
        # one read back to the host for both checks (on a GPU each read waits for its queue)
        bad_range, empty_class = torch.stack([out_of_range, (counts == 0).any()]).tolist()
        if bad_range:
            raise ValueError(f"support_labels must lie in 0..{self.way - 1} (way={self.way})")
        if empty_class:
            raise ValueError(
                f"every class 0..{self.way - 1} needs at least one support video in every episode"
            )
        if self.class_names is not None and (
            len(self.class_names) != b or any(len(n) != self.way for n in self.class_names)
        ):
            raise ValueError(
                f"class_names must be {b} lists of way={self.way} names, got lengths "
                f"{[len(n) for n in self.class_names]}"
            )

    @property
    def batch_size(self) -> int:
        return int(self.support.shape[0])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> EpisodeBatch:
        """Move every tensor to ``device`` (features also to ``dtype`` when given)."""

        def move(t: Tensor | None, feat: bool = False) -> Tensor | None:
            if t is None:
                return None
            return t.to(device, dtype=dtype if feat and dtype is not None else None)

        return EpisodeBatch(
            support=move(self.support, True),
            support_labels=move(self.support_labels),
            query=move(self.query, True),
            query_labels=move(self.query_labels),
            support_classes=move(self.support_classes),
            query_classes=move(self.query_classes),
            way=self.way,
            class_names=self.class_names,
        )


def episode_class_names(classes: Any, names: Sequence[str]) -> list[list[str]]:
    """``classes [B, way]`` class ids (label order) -> ``B`` lists of ``way`` names."""
    return [[names[int(c)] for c in row] for row in classes.tolist()]


def label_classes(support_labels: Tensor, support_classes: Tensor, way: int) -> Tensor:
    """``[B, way]`` global class of each episode label, read off the support set."""
    first = torch.stack([(support_labels == c).int().argmax(1) for c in range(way)], 1)
    return support_classes.gather(1, first)


@dataclass
class MethodOutput:
    """What a method returns for a batch of episodes.

    Attributes:
        logits: ``[B, Nq, way]``; higher means more likely.
        losses: named extra loss terms (already weighted), added to cross-entropy in training.
        extras: diagnostics (attention maps, masks...) that are not losses.
    """

    logits: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingStage:
    """One stage of a method's training, run in order by the trainer.

    Attributes:
        name: short name recorded in logs and checkpoints (e.g. ``"saliency"``, ``"main"``).
        parameters: returns the parameters this stage optimises (others stay frozen).
        loss: maps an :class:`EpisodeBatch` (with labels and, where needed, global classes)
            to named loss terms; the trainer minimises their sum.
        fraction: this stage's share of all optimiser steps. The last stage trains for the
            recipe's ``steps``; an earlier one runs ``steps · fraction / last.fraction``
            before it (:func:`fsarbench.training.loop.stage_steps`).
        needs_classes: the loss needs ``support_classes``/``query_classes``.
    """

    name: str
    parameters: Callable[[], Iterable[nn.Parameter]]
    loss: Callable[[EpisodeBatch], dict[str, Tensor]]
    fraction: float = 1.0
    needs_classes: bool = False


@dataclass
class NoConfig:
    """Hyper-parameters of a method that has none."""


MATCH_KEYWORDS = ("support_classes", "query_classes", "class_names")


@functools.cache
def match_keywords(cls: type) -> frozenset[str]:
    """The optional keywords (``support_classes``, ``query_classes``, ``class_names``)
    ``cls.match`` accepts: ``forward`` passes only those, so a hand-written ``match(self,
    support, support_labels, query, way)`` works as it is."""
    params = inspect.signature(cls.match).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return frozenset(MATCH_KEYWORDS)
    return frozenset(k for k in MATCH_KEYWORDS if k in params)


class FewShotMethod(nn.Module):
    """Base class of every few-shot head.

    Subclasses set ``Config`` to a dataclass of hyper-parameters and implement
    :meth:`encode` and :meth:`match`. ``create_method`` builds them with keyword-only
    ``feature_dim``, ``seq_len``, ``num_train_classes`` and ``config``.
    """

    Config: ClassVar[type] = NoConfig
    #: ``match`` uses the support set only through the per-class means of its state (every
    #: state tensor averaged over each class's support videos). The evaluator then passes
    #: those means, computed straight from the encoded pool, as a support of ``way`` videos
    #: labelled ``0..way-1`` instead of gathering every support video (HyRSM, ProtoNet).
    support_means: ClassVar[bool] = False
    #: The reference's hyper-parameters per dataset name (``"kinetics100"``, ``"ssv2-full"``,
    #: ...), applied by ``create_method(..., dataset=...)`` over the ``Config`` defaults and
    #: under a registered name's presets and the caller's values. Checked at registration.
    dataset_presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: Hyper-parameters added after checkpoints were saved, with the value those checkpoints
    #: were trained with (the new default may differ): applied under the hyper-parameters a
    #: checkpoint stores (:func:`fsarbench.registry.stored_hparams`).
    legacy_hparams: ClassVar[Mapping[str, Any]] = {}
    #: Episodes per ``match`` call that ran fastest in ``make bench``, by device type and
    #: shot (``{"cpu": {1: 16, 5: 16}}``): the evaluator's batch when its caller gives none
    #: (:meth:`preferred_episode_batch`). Batching never changes a result, only its speed.
    episode_batch: ClassVar[Mapping[str, Mapping[int, int]]] = {}
    #: ``match`` needs the episode's class names (``class_names=``, ``B`` lists of ``way``
    #: strings in label order): the trainer and the evaluator then fill them from the
    #: dataset's class names. Such a method is never pairwise (a name belongs to a class).
    uses_class_names: ClassVar[bool] = False

    @classmethod
    def backbone_hparams(cls, features: Mapping[str, Any]) -> dict[str, Any]:
        """Hyper-parameters that follow from the frame features the method runs on
        (``features``: ``backbone``, ``weights``, ``tiny`` as the track recorded them), applied
        under the caller's values; e.g. CLIP-FSAR picks the text tower of the image tower.
        Default: none."""
        return {}

    def __init__(
        self,
        *,
        feature_dim: int,
        seq_len: int,
        num_train_classes: int | None = None,
        config: Any = None,
    ) -> None:
        super().__init__()
        if feature_dim <= 0 or seq_len <= 0:
            raise ValueError(
                f"feature_dim and seq_len must be positive, got {feature_dim}, {seq_len}"
            )
        self.feature_dim = int(feature_dim)
        self.seq_len = int(seq_len)
        self.num_train_classes = num_train_classes
        self.config = config if config is not None else self.Config()

    # -- the two halves ---------------------------------------------------------------------
    def encode(self, features: Tensor) -> State:
        """Per-video part: ``features [N, T, D]`` -> state whose tensors lead with ``N``."""
        return features

    def match(
        self,
        support: State,
        support_labels: Tensor,
        query: State,
        way: int,
        *,
        support_classes: Tensor | None = None,
        query_classes: Tensor | None = None,
    ) -> MethodOutput:
        """Per-episode part.

        Args:
            support: encoded support videos, tensors leading with ``[B, Ns]``.
            support_labels: ``[B, Ns]`` long in ``0..way-1``.
            query: encoded queries, tensors leading with ``[B, Nq]``.
            way: classes per episode.
            support_classes, query_classes: optional global class ids ``[B, Ns]``/``[B, Nq]``.
            class_names: (methods with ``uses_class_names``) ``B`` lists of ``way`` names.

        Returns:
            :class:`MethodOutput` with ``logits [B, Nq, way]``.
        """
        raise NotImplementedError

    def preferred_episode_batch(self, device_type: str, shot: int) -> int | None:
        """:attr:`episode_batch` for ``device_type`` at ``shot``; an unlisted shot takes the
        entry of the largest listed shot below it (else the smallest listed); ``None`` when
        nothing is listed for the device."""
        table = self.episode_batch.get(device_type, {})
        if not table:
            return None
        below = [s for s in table if s <= shot]
        return int(table[max(below) if below else min(table)])

    # -- optional: heads that score (query, support) pairs independently ------------------
    def pairwise(self, shot: int) -> bool:
        """Whether, with ``shot`` support videos per class, :meth:`match`'s logits are the
        mean over each class's support videos of :meth:`pair_logits`.

        Then a pair's score does not depend on the episode, and an evaluation whose episodes
        revisit the same (query, support) pairs scores each pair once
        (:mod:`fsarbench.pairs`). OTAM is pairwise at every shot, TRX at 1-shot only (its
        attention spans all of a class's videos).
        """
        return False

    def pair_logits(self, query: State, support: State) -> Tensor:
        """Score of every (query, support) video pair, for heads where :meth:`pairwise`.

        Args:
            query: encoded videos, tensors leading with ``[B, Nq]``.
            support: encoded videos, tensors leading with ``[B, Ns]``.

        Returns:
            ``[B, Nq, Ns]``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not score video pairs")

    # -- optional: heads that precompute products over the whole test pool ----------------
    def pool_products_bytes(self, n_videos: int, shot: int) -> int | None:
        """Memory of :meth:`pool_products` for a pool of ``n_videos`` at ``shot`` (bytes);
        ``None`` (the default): the head has no pool products and every episode is matched
        from gathered states. The evaluator uses them when they fit a fixed budget and the
        episodes revisit the pool's pairs (:func:`fsarbench.pairs.use_pool_products`); the
        choice depends on the pool and the manifest only, never on the machine."""
        return None

    def pool_products(self, state: State) -> State:
        """Products over the encoded pool that every episode reuses (e.g. each video pair's
        frame-level products), for heads where :meth:`pool_products_bytes` is not ``None``.

        Args:
            state: the pool's encoded videos, tensors leading with ``[U]``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no pool products")

    def match_pool(
        self,
        state: State,
        products: State,
        support_index: Tensor,
        support_labels: Tensor,
        query_index: Tensor,
        way: int,
    ) -> MethodOutput:
        """:meth:`match` of episodes given as pool positions: the same logits (up to float
        rounding), with the per-pair products looked up in ``products``.

        Args:
            state: the pool's encoded videos ``[U, ...]``; products: :meth:`pool_products`.
            support_index: ``[B, Ns]`` pool positions; support_labels: ``[B, Ns]``.
            query_index: ``[B, Nq]`` pool positions.
        """
        raise NotImplementedError(f"{type(self).__name__} has no pool products")

    # -- optional: heads that gather their episodes' videos themselves --------------------
    @property
    def gathers_episodes(self) -> bool:
        """Whether the evaluator passes episodes as pool positions to :meth:`match_indexed`
        instead of gathering their encoded videos for :meth:`match` (default ``False``). A
        head does this when it can interleave the gather with its own products (e.g. the
        frame products of OTAM and Bi-MHM, made a few episodes at a time while the gathered
        frames are in cache)."""
        return False

    def match_indexed(
        self,
        state: State,
        support_index: Tensor,
        support_labels: Tensor,
        query_index: Tensor,
        way: int,
    ) -> MethodOutput:
        """:meth:`match` of episodes given as pool positions, for heads where
        :attr:`gathers_episodes`: the same logits, to the bit.

        Args:
            state: the pool's encoded videos, tensors leading with ``[U]``.
            support_index: ``[B, Ns]`` pool positions; support_labels: ``[B, Ns]``.
            query_index: ``[B, Nq]`` pool positions.
        """
        raise NotImplementedError(f"{type(self).__name__} does not gather its episodes")

    # -- composition ------------------------------------------------------------------------
    def encode_episodes(self, videos: Tensor) -> State:
        """Encode ``[B, N, T, D]`` videos into a state leading with ``[B, N]``."""
        b, n = videos.shape[:2]
        state = self.encode(videos.reshape(b * n, *videos.shape[2:]))
        return state_reshape_leading(state, 1, (b, n))

    def forward(self, batch: EpisodeBatch) -> MethodOutput:
        """``match(encode(support), ..., encode(query))``, encoding both in one call (fewer,
        larger kernels: training steps spend much of their time in ``encode``)."""
        ns = batch.support.shape[1]
        state = self.encode_episodes(torch.cat([batch.support, batch.query], 1))
        classes = {
            "support_classes": batch.support_classes,
            "query_classes": batch.query_classes,
            "class_names": batch.class_names,
        }
        return self.match(
            state_map(lambda t: t[:, :ns], state),
            batch.support_labels,
            state_map(lambda t: t[:, ns:], state),
            batch.way,
            **{k: v for k, v in classes.items() if k in match_keywords(type(self))},
        )

    @classmethod
    def check_class_names(cls, config: Any, names: Sequence[str]) -> None:
        """Refuse, before any extraction or training, class names this method cannot use
        (``names``: every class of the splits a run meets; ``config``: the ``Config`` it
        will be built with). Methods with ``uses_class_names`` check what their text needs
        (CLIP-FSAR: no split tags); nothing by default."""

    # -- training ---------------------------------------------------------------------------
    def episode_loss(self, batch: EpisodeBatch) -> dict[str, Tensor]:
        """Cross-entropy on the logits plus the method's named extra losses."""
        if batch.query_labels is None:
            raise ValueError("training needs query_labels in the EpisodeBatch")
        out = self(batch)
        losses = {"ce": F.cross_entropy(out.logits.flatten(0, 1), batch.query_labels.flatten())}
        losses.update(out.losses)
        return losses

    def training_stages(self) -> list[TrainingStage]:
        """Stages run in order by the trainer; by default one episodic stage on everything."""
        return [
            TrainingStage(
                name="main",
                parameters=lambda: [p for p in self.parameters() if p.requires_grad],
                loss=self.episode_loss,
                needs_classes=self.num_train_classes is not None,
            )
        ]

    @property
    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters as a plain dict (recorded with results)."""
        from dataclasses import asdict, is_dataclass

        return asdict(self.config) if is_dataclass(self.config) else dict(vars(self.config))
