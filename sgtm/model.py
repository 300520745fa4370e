"""SGTM: saliency-guided fine-grained temporal mask learning (Sec. 3.2) as a fsarbench head.

Per video (``encode``, the matching branch of eq. 6): ``[T, D]`` frames -> ``T*D/P`` tokens of
size P -> + positional embedding -> Φ_enc -> shallow transformer -> ``[T, D]`` -> the matcher's
own ``encode``. Per episode (``match``): the registered OTAM / Bi-MHM head, unchanged.
In training, ``forward`` adds ``λ·L_recon`` (eq. 5, 8) from the masked branch; Φ_cls is trained
first, alone, on the meta-train class labels (stage "saliency"), then frozen (stage "main").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

import fsarbench as fb
from fsarbench_sgtm.autoencoder import PositionalEmbedding, TokenDecoder, gather_tokens
from fsarbench_sgtm.config import SGTMConfig
from fsarbench_sgtm.masks import get_mask_strategy, num_masked_frames
from fsarbench_sgtm.saliency import SaliencyClassifier, saliency_loss
from fsarbench_sgtm.tokens import check_token_dim, frame_token_mask, from_tokens, to_tokens
from fsarbench_sgtm.transformer import TransformerStack, init_weights

log = logging.getLogger(__name__)
#: Actionness spread (max - min of ``Σ_c A`` over a video's frames) at or below which a
#: video's frames count as tied.
FLAT_ACTIONNESS = 1e-6

__all__ = ["SGTM", "token_error"]


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode (no dropout) and restore its mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def class_max(scores: Tensor, labels: Tensor, way: int) -> Tensor:
    """The best score among each class's support videos.

    Args:
        scores: ``[B, Nq, Ns]`` per (query, support video) scores.
        labels: ``[B, Ns]`` support episode labels in ``0..way-1``.

    Returns:
        ``[B, Nq, way]``.
    """
    member = labels.unsqueeze(-1) == torch.arange(way, device=labels.device)  # [B, Ns, way]
    masked = scores.unsqueeze(-1).masked_fill(~member.unsqueeze(1), float("-inf"))
    return masked.amax(2)


def token_error(recon: Tensor, target: Tensor, kind: str) -> Tensor:
    """Per-token error of eq. 5: ``[N, M, P]`` pairs -> ``[N, M]``.

    "mse": ``mean_p (x̂ - x)²`` (the "Mean Square Error" the text names); "l2":
    ``||x̂ - x||_2`` (what eq. 5 writes: a norm, not squared, not divided by P).
    """
    diff = recon - target
    if kind == "mse":
        return diff.pow(2).mean(-1)
    if kind == "l2":
        return torch.linalg.vector_norm(diff, dim=-1)
    raise ValueError(f"unknown recon_loss {kind!r}; known: 'mse', 'l2'")


class SGTM(fb.FewShotMethod):
    """SGTM (Saliency-Guided fine-grained Temporal Mask learning, ACM MM'24) over a
    registered frame matcher (OTAM or Bi-MHM)."""

    Config: ClassVar[type] = SGTMConfig
    # On synth-planted's videos the default stage 1's ReLU evidence dies and signed sums rank
    # background first; softplus evidence that starts "off" finds the window (docs/methods.md,
    # "On videos: synth-planted"). Real datasets keep the defaults until measured there.
    dataset_presets: ClassVar[dict[str, dict[str, Any]]] = {
        "synth-planted": {"saliency_rectify": "softplus", "saliency_init": "off"},
    }
    CONTRACT_HPARAMS: ClassVar[dict[str, Any]] = {
        "token_dim": 16,
        "num_heads": 2,
        "saliency_hidden": 16,
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._flat_warned = False  # _warn_if_flat says it once per model
        self._flat_calls = 0  # it looks at calls 1, 2, 4, 8, ...: each look reads the device
        cfg: SGTMConfig = self.config
        d, t = self.feature_dim, self.seq_len
        if cfg.token_dim is None and (cfg.tokens_per_frame <= 0 or d % cfg.tokens_per_frame):
            raise ValueError(f"tokens_per_frame={cfg.tokens_per_frame} must divide D={d}")
        self.token_dim = p = cfg.token_dim or d // cfg.tokens_per_frame
        self.tokens_per_frame = check_token_dim(d, p)
        self.num_tokens = t * self.tokens_per_frame
        self.strategy = get_mask_strategy(cfg.mask)
        self.num_masked = num_masked_frames(t, cfg.k, cfg.mask_ratio)
        if self.num_masked == 0 and cfg.mask != "none":
            raise ValueError(
                f"k={cfg.k}, mask_ratio={cfg.mask_ratio} masks 0 of {t} frames: the "
                f"reconstruction would see every frame and the {cfg.mask!r} mask would do "
                "nothing; mask at least one frame, or set mask='none' for no masking"
            )
        if not 0.0 < cfg.saliency_fraction < 1.0:
            raise ValueError(f"saliency_fraction must lie in (0, 1), got {cfg.saliency_fraction}")
        self.matcher = fb.create_method(
            cfg.matcher,
            feature_dim=d,
            seq_len=t,
            num_train_classes=self.num_train_classes,
            **cfg.matcher_hparams,
        )
        if cfg.support_score == "nearest" and self.matcher.support_means:
            raise ValueError(
                f"support_score='nearest' scores single support videos, but matcher "
                f"{cfg.matcher!r} with {cfg.matcher_hparams} matches class prototypes; use "
                "support_score='class_mean' or a matcher without prototypes"
            )
        stack = dict(heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout)
        self.pos_embed = PositionalEmbedding(self.num_tokens, p, cfg.enc_pos_embed)
        self.encoder = (
            TransformerStack(p, cfg.encoder_layers, final_norm=True, **stack)
            if cfg.use_encoder
            else None
        )
        self.matching = TransformerStack(p, cfg.matching_layers, **stack)
        self.decoder = self._build_decoder(cfg)
        self.saliency = self._build_saliency(cfg)
        for part in (self.encoder, self.matching, self.decoder):
            if part is not None:
                init_weights(part, cfg.residual_init_scale)
        self._refuse_unused(cfg)

    # -- construction ----------------------------------------------------------------------
    @property
    def reconstructs(self) -> bool:
        """Whether the masked reconstruction branch exists (a mask, an encoder, λ > 0)."""
        return self.decoder is not None

    def _refuse_unused(self, cfg: SGTMConfig) -> None:
        """A hyper-parameter set away from its default where this configuration has no use for
        it (``sgtm-otam-baseline`` with ``lambda_recon=0.9``, ``sgtm-otam-tml`` with
        ``saliency_hidden=64``) would change no number but name a record after a setting that
        did nothing: refused. A saliency setting without ``Φ_cls`` is refused only at a value
        neither the defaults, a dataset preset nor the contract check's settings give it:
        presets set them for every variant (``synth-planted``), and checkpoints store them."""
        unused = []
        if self.decoder is None:
            unused += ["k", "mask_ratio", "recon_tokens", "recon_loss", "detach_target"]
            unused += ["decoder_layers", "decoder_dim"]
            if self.strategy is None or not cfg.use_encoder:  # else λ = 0 removed the branch
                unused.append("lambda_recon")
        if self.encoder is None:
            unused.append("encoder_layers")
        missing = "encoder or " if self.encoder is None else ""
        reasons = {f: f"no {missing}reconstruction branch" for f in unused}
        if self.saliency is None:
            reasons |= {f: "no Φ_cls" for f in vars(cfg) if f.startswith("saliency_")}
        changed = [f for f in reasons if not self._preset_value(f, cfg)]
        if changed:
            why = " and ".join(sorted({reasons[f] for f in changed}))
            raise ValueError(
                f"{', '.join(f'{f}={getattr(cfg, f)!r}' for f in changed)} has no effect here "
                f"(mask={cfg.mask!r}, use_encoder={cfg.use_encoder}, lambda_recon="
                f"{cfg.lambda_recon}: {why}); drop it, or pick a variant that uses it"
            )

    def _preset_value(self, field: str, cfg: SGTMConfig) -> bool:
        """Whether ``cfg``'s ``field`` holds its default; saliency fields also accept what a
        dataset preset or the contract check's settings give them."""
        value = getattr(cfg, field)
        if value == getattr(SGTMConfig(), field):
            return True
        if not field.startswith("saliency_"):
            return False
        presets = [*self.dataset_presets.values(), self.CONTRACT_HPARAMS]
        return any(field in p and p[field] == value for p in presets)

    def _build_decoder(self, cfg: SGTMConfig) -> TokenDecoder | None:
        if self.strategy is None or cfg.lambda_recon == 0:
            return None
        if not cfg.use_encoder:
            raise ValueError(f"mask={cfg.mask!r} reconstructs through Φ_enc: set use_encoder=True")
        return TokenDecoder(
            self.num_tokens,
            self.token_dim,
            cfg.decoder_dim or self.token_dim,
            cfg.decoder_layers,
            cfg.num_heads,
            cfg.mlp_ratio,
            cfg.dropout,
        )

    def _build_saliency(self, cfg: SGTMConfig) -> SaliencyClassifier | None:
        if not (self.reconstructs and self.strategy.needs_saliency):
            return None
        if self.num_train_classes is None:
            raise ValueError(
                f"SGTM's {cfg.mask!r} mask needs Φ_cls, a classifier over the meta-train "
                "classes: pass num_train_classes to create_method"
            )
        return SaliencyClassifier(
            self.feature_dim,
            self.num_train_classes,
            layers=cfg.saliency_layers,
            hidden=cfg.saliency_hidden,
            kernel=cfg.saliency_kernel,
            dropout=cfg.saliency_dropout,
            pool=cfg.saliency_pool,
            topk_ratio=cfg.saliency_topk_ratio,
            rectify=cfg.saliency_rectify,
            init=cfg.saliency_init,
            padding=cfg.saliency_padding,
        )

    # -- matching branch (inference) -------------------------------------------------------
    def matching_features(self, features: Tensor) -> Tensor:
        """Eq. 6: ``[N, T, D]`` -> ``X^mat`` ``[N, T, D]`` (all tokens, no mask)."""
        h = self.pos_embed(to_tokens(features, self.token_dim))
        if self.encoder is not None:
            h = self.encoder(h)
        return from_tokens(self.matching(h), self.seq_len)

    def encode(self, features: Tensor) -> fb.State:
        """``[N, T, D]`` -> the matcher's state of ``X^mat``."""
        return self.matcher.encode(self.matching_features(features))

    def match(
        self, support: fb.State, support_labels: Tensor, query: fb.State, way: int, **classes: Any
    ) -> fb.MethodOutput:
        """The matcher (OTAM / Bi-MHM) on encoded videos -> logits ``[B, Nq, way]``; with
        ``support_score="nearest"`` each class scores its nearest support video."""
        if self.config.support_score == "class_mean":
            return self.matcher.match(support, support_labels, query, way, **classes)
        scores = self.matcher.pair_logits(query, support)  # [B, Nq, Ns]
        return fb.MethodOutput(logits=class_max(scores, support_labels, way))

    @property
    def support_means(self) -> bool:
        """As the matcher."""
        return self.matcher.support_means

    def pairwise(self, shot: int) -> bool:
        """As the matcher, where a class's score is the mean of its pair scores (the
        evaluator's pair tables average them): always at 1-shot."""
        return self.matcher.pairwise(shot) and (
            shot == 1 or self.config.support_score == "class_mean"
        )

    def pair_logits(self, query: fb.State, support: fb.State) -> Tensor:
        """The matcher's pair scores on encoded videos: ``[B, Nq, Ns]``."""
        return self.matcher.pair_logits(query, support)

    # -- reconstruction branch (training) --------------------------------------------------
    def actionness_logits(self, videos: Tensor) -> Tensor:
        """``[N, T, D]`` -> ``Σ_c A`` ``[N, T]`` of the frozen Φ_cls (no grad, no dropout):
        eq. 2 before its sigmoid."""
        # float32 outside autocast: under bf16 autocast a trained Φ_cls's frame scores tied
        # (their spread ~0.006 below bf16's step ~0.016 near -4), and the stable sort then
        # masked the earlier frames (73 % of masks changed on a 5-shot model)
        off = torch.autocast(videos.device.type, enabled=False)
        dtype = next(self.saliency.parameters()).dtype  # float32, or float64 in the tests
        with torch.no_grad(), _eval_mode(self.saliency), off:
            return self.saliency.actionness_logits(videos.detach().to(dtype))

    def actionness(self, videos: Tensor) -> Tensor:
        """``[N, T, D]`` -> ``[N, T]`` actionness ``sigmoid(Σ_c A)`` of the frozen Φ_cls (eq. 2)."""
        return torch.sigmoid(self.actionness_logits(videos))

    def frame_mask(self, videos: Tensor) -> Tensor:
        """``[N, T, D]`` -> ``[N, T]`` bool, True where a frame is masked.

        Saliency strategies rank frames by ``Σ_c A``, the pre-sigmoid actionness: the sigmoid
        is monotone, so the order is eq. 2's, but saturated sigmoids (``Σ_c A`` beyond ~17 in
        float32) would tie and leave the order to the stable sort."""
        if self.strategy.needs_saliency:
            scores = self.actionness_logits(videos)
            self._warn_if_flat(scores)
        else:
            scores = videos.new_zeros(videos.shape[:2])
        return self.strategy.fn(scores, self.num_masked)

    def _warn_if_flat(self, scores: Tensor) -> None:
        """Say once when Φ_cls gives most videos one actionness for every frame (e.g. every
        ``max(A, 0)`` dead at 0): its "saliency" masks are then frame order, not saliency.
        Looked at on calls 1, 2, 4, 8, ... (a GPU waits for its queue at each look)."""
        self._flat_calls += 1
        if self._flat_warned or scores.shape[1] < 2 or self._flat_calls & (self._flat_calls - 1):
            return
        flat = float(((scores.amax(1) - scores.amin(1)) <= FLAT_ACTIONNESS).float().mean())
        if flat > 0.5:
            self._flat_warned = True
            log.warning(
                "SGTM: Φ_cls gives %.0f%% of videos the same actionness on every frame, so its "
                "saliency masks follow frame order, not saliency (saliency_rectify=%r, "
                "saliency_init=%r). Try saliency_rectify=softplus saliency_init=off; see "
                "docs/methods.md, 'How Φ_cls learns actionness'.",
                100 * flat,
                self.config.saliency_rectify,
                self.config.saliency_init,
            )

    def reconstruct(self, videos: Tensor, frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 3-4: encode the visible tokens, decode all of them.

        Returns:
            ``X^recon`` ``[N, M, P]`` and the per-token mask ``[N, M]`` (True = masked).
        """
        tokens = to_tokens(videos, self.token_dim)
        token_mask = frame_token_mask(frame_mask, self.tokens_per_frame)
        counts = frame_mask.sum(1)
        if bool((counts != counts[0]).any()):
            raise ValueError("every video of a batch must have the same number of masked frames")
        visible_count = self.num_tokens - int(token_mask[0].sum())
        # stable sort puts the visible (False) tokens first, in their original order
        visible = torch.sort(token_mask.to(torch.uint8), dim=1, stable=True).indices
        visible = visible[:, :visible_count]
        latent = self.encoder(self.pos_embed(gather_tokens(tokens, visible), visible))
        return self.decoder(latent, visible), token_mask

    def reconstruction_loss(self, videos: Tensor) -> Tensor:
        """Eq. 5: the per-token error between ``X^recon`` and the tokens of ``videos``
        (``recon_loss``: "mse" squared error averaged over the P values, "l2" the norm
        ``||x̂_t - x_t||_2``), averaged over all ``N' = T*D/P`` tokens (or the masked ones,
        ``recon_tokens``)."""
        recon, token_mask = self.reconstruct(videos, self.frame_mask(videos))
        target = to_tokens(videos, self.token_dim)
        if self.config.detach_target:
            target = target.detach()
        err = token_error(recon, target, self.config.recon_loss)  # [N, M]
        if self.config.recon_tokens == "masked":
            return err[token_mask].mean() if token_mask.any() else err.sum() * 0
        return err.mean()

    def forward(self, batch: fb.EpisodeBatch) -> fb.MethodOutput:
        """Matching logits; in training also ``losses["recon"] = λ·L_recon``."""
        out = super().forward(batch)
        if self.training and self.reconstructs:
            videos = torch.cat([batch.support.flatten(0, 1), batch.query.flatten(0, 1)])
            out.losses["recon"] = self.config.lambda_recon * self.reconstruction_loss(videos)
        return out

    # -- training stages -------------------------------------------------------------------
    def saliency_loss(self, batch: fb.EpisodeBatch) -> dict[str, Tensor]:
        """Stage 1: cross-entropy of Φ_cls's video-level scores on global class ids."""
        if batch.support_classes is None or batch.query_classes is None:
            raise ValueError("SGTM stage 'saliency' needs support_classes and query_classes")
        videos = torch.cat([batch.support.flatten(0, 1), batch.query.flatten(0, 1)]).detach()
        classes = torch.cat([batch.support_classes.flatten(), batch.query_classes.flatten()])
        logits = self.saliency.video_logits(videos)
        loss = self.config.saliency_loss
        return {f"saliency_{loss}": saliency_loss(logits, classes, loss)}

    def main_parameters(self) -> list[nn.Parameter]:
        """Every parameter except Φ_cls's (the matcher's included)."""
        frozen = {id(p) for p in self.saliency.parameters()} if self.saliency else set()
        return [p for p in self.parameters() if id(p) not in frozen]

    def training_stages(self) -> list[fb.TrainingStage]:
        """``[saliency (Φ_cls alone), main (everything else, L = L_CE + λ·L_recon)]``."""
        main = fb.TrainingStage(
            name="main",
            parameters=self.main_parameters,
            loss=self.episode_loss,
            needs_classes=self.num_train_classes is not None,
        )
        if self.saliency is None:
            return [main]
        frac = self.config.saliency_fraction
        main.fraction = 1.0 - frac
        first = fb.TrainingStage(
            name="saliency",
            parameters=lambda: list(self.saliency.parameters()),
            loss=self.saliency_loss,
            fraction=frac,
            needs_classes=True,
        )
        return [first, main]
