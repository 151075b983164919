"""``SSLMethod``: what every pretraining method shares.

A method subclass adds its heads (and target network, if any) and a ``training_step`` that
calls its loss. Everything else lives here once: the backbone, the optimiser and learning-rate
schedule built from config with linear scaling by the global batch size, the online linear
probe on detached features (a cheap health signal while pretraining), the non-finite-loss
guard, and ``evaluation_encoders``, the single hook that names the encoders every evaluation
uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from sslkit.configurable import configurable
from sslkit.models.backbones import Backbone, describe
from sslkit.models.ema import EMATeacher
from sslkit.optim import FIXED_LR, parameter_groups

OptimizerFactory = Callable[..., Optimizer]
# On accelerators, read device-side health flags (non-finite loss, collapse) every this many
# steps and before every checkpoint, instead of stalling every step on a host sync.
HOST_CHECK_EVERY = 25
ScheduleFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the run stops before the weights are corrupted."""


#: Arguments ``build_method`` passes to every method at run time, never set in a config.
METHOD_RUNTIME_ARGS = (
    "backbone", "optimizer", "schedule", "num_classes", "multilabel", "batch_size",
    "base_batch_size",
)  # fmt: skip


@configurable(runtime=METHOD_RUNTIME_ARGS)
class SSLMethod(pl.LightningModule):
    """Base LightningModule for pretraining methods.

    **What evaluation sees.** :meth:`evaluation_encoders` is the one hook that decides it: it
    returns the encoders of the method by name, each a module mapping a batch of images to
    features ``(B, D)``, always with ``"student"`` (the backbone by default; BYOL adds
    ``"teacher"``). Every consumer calls it and nothing else: the kNN monitor while training,
    the final kNN / linear / low-shot protocols, plots and ``results.json``, ``sslkit-eval``
    (each picking ``eval.encoder``) and the online probe (``"student"``). A method that
    evaluates something other than its backbone overrides this hook, and its training step
    hands the labelled images to :meth:`online_probe_loss` so the probe can encode them too;
    ``forward_features`` is an alias of the student encoder and cannot be overridden.

    Args:
        backbone: the encoder being pretrained; its pooled features are the ``"student"``
            evaluation encoder unless :meth:`evaluation_encoders` says otherwise.
        optimizer: partial optimiser (``lr`` is the base learning rate for a global batch of
            ``base_batch_size``; the actual rate is scaled linearly with the global batch).
        schedule: partial of a schedule taking ``total_steps`` and ``steps_per_epoch``.
        num_classes: classes of the dataset, for the online probe (0 disables it).
        multilabel: whether targets are multi-hot vectors (sigmoid probe) or class indices.
        batch_size: per-device batch size of the pretraining loader.
        base_batch_size: the batch size at which ``lr`` is meant (256 by convention).
        online_probe: train a linear classifier on detached features while pretraining.
        no_decay_lr_scale: the learning rate of the parameters kept out of weight decay
            (biases, normalisation layers and what a module names in ``no_weight_decay()``)
            relative to every other parameter's, >= 0. Barlow Twins' recipe gives them 0.0048
            against 0.2 for the weights (0.024); 1 (default): the same rate. Under LARS these
            parameters also skip the trust ratio, so this is the only scale their steps get.
    """

    #: The kind of backbone the method works on (MAE: a ViT); every one by default.
    backbone_kind: ClassVar[type[nn.Module]] = nn.Module

    def __init__(
        self,
        backbone: Backbone,
        *,
        optimizer: OptimizerFactory,
        schedule: ScheduleFactory | None = None,
        num_classes: int = 0,
        multilabel: bool = False,
        batch_size: int = 256,
        base_batch_size: int = 256,
        online_probe: bool = True,
        no_decay_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if batch_size < 1 or base_batch_size < 1:
            raise ValueError("batch_size and base_batch_size must be positive")
        if not 0.0 <= no_decay_lr_scale < math.inf:
            raise ValueError(
                "method.no_decay_lr_scale is the learning rate of biases and normalisation "
                "layers relative to the other parameters' and must be a finite number >= 0, "
                f"got {no_decay_lr_scale}."
            )
        self.no_decay_lr_scale = no_decay_lr_scale
        self.backbone = backbone
        self.optimizer_factory = optimizer
        self.schedule_factory = schedule
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.batch_size = batch_size
        self.base_batch_size = base_batch_size
        self.online_probe = (
            nn.Linear(backbone.feature_dim, num_classes) if online_probe and num_classes else None
        )
        # Step of the first non-finite loss (-1: none), kept on the training device.
        self.register_buffer("_nonfinite_step", torch.tensor(-1), persistent=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "forward_features" in vars(cls):
            raise TypeError(
                f"{cls.__name__} overrides forward_features, which no evaluation calls: "
                "override evaluation_encoders() instead, the hook that kNN, the linear probe, "
                "the monitor and the online probe all use."
            )

    # ----------------------------------------------------------------- features
    def evaluation_encoders(self) -> dict[str, nn.Module]:
        """The encoders evaluation may pick by name (``eval.encoder``); the evaluation hook.

        Each maps images ``(B, ...)`` to features ``(B, D)`` (outputs of more dimensions are
        flattened). ``"student"`` is required: it is the default ``eval.encoder`` and the
        encoder of the online probe, whose width is ``backbone.feature_dim``. Overriding
        methods add entries (BYOL's ``"teacher"``) or replace the student's.
        """
        return {"student": self.backbone}

    def _student_encoder(self) -> nn.Module:
        """``evaluation_encoders()["student"]``, with a clear error when a method omits it."""
        encoders = self.evaluation_encoders()
        if "student" not in encoders:
            raise ValueError(
                f"{type(self).__name__}.evaluation_encoders() must name a 'student' encoder "
                f"(the default eval.encoder and the online probe's); it names {sorted(encoders)}."
            )
        return encoders["student"]

    def forward_features(self, x: Tensor) -> Tensor:
        """Features ``(B, D)`` of the student evaluation encoder: an alias of
        ``evaluation_encoders()["student"](x)``, not a hook of its own."""
        return self._student_encoder()(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)

    # ------------------------------------------------------------ online probe
    def online_probe_loss(
        self, features: Tensor, targets: Tensor, images: Tensor | None = None
    ) -> Tensor:
        """Loss of the online linear probe on detached features (zero without labels).

        The probe never sends gradients into the backbone, so it measures the representation
        without changing it; its accuracy is logged as ``train/online_top1``. It reads the
        student evaluation encoder (:meth:`evaluation_encoders`): when that is the backbone,
        the features the training step already computed; otherwise that encoder's features of
        ``images``, computed here in eval mode without gradients.

        Args:
            features: ``(B, D)`` backbone features of the labelled images of the batch.
            targets: their class indices (-1: unlabelled) or multi-hot vectors.
            images: those images; needed only when the student encoder is not the backbone.
        """
        if self.online_probe is None:
            return features.new_zeros(())
        encoder = self._student_encoder()
        if encoder is not self.backbone:
            if images is None:
                raise ValueError(
                    f"{type(self).__name__}.evaluation_encoders() gives a 'student' encoder "
                    "other than the backbone, so the online probe encodes the images itself: "
                    "pass them as online_probe_loss(features, targets, images=...)."
                )
            features = _frozen_features(encoder, images)
        logits = self._probe_logits(features.detach())
        if self.multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, targets.float())
        else:
            labelled = targets >= 0
            if not labelled.any():
                return features.new_zeros(())
            logits, targets = logits[labelled], targets[labelled]
            loss = F.cross_entropy(logits, targets)
            top1 = (logits.argmax(dim=1) == targets).float().mean()
            self.log("train/online_top1", top1, on_step=False, on_epoch=True)
        self.log("train/online_probe_loss", loss, on_step=False, on_epoch=True)
        return loss

    def _probe_logits(self, features: Tensor) -> Tensor:
        features = features.reshape(features.shape[0], -1)
        expected = self.online_probe.in_features
        if features.shape[1] != expected:
            raise ValueError(
                f"the online probe takes {expected} features (backbone.feature_dim) but the "
                f"student evaluation encoder of {type(self).__name__} gives {features.shape[1]}; "
                "make them match or turn the probe off with method.online_probe=false."
            )
        return self.online_probe(features)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        if self.online_probe is None:
            return
        images, targets = batch
        logits = self._probe_logits(self._student_encoder()(images))
        if self.multilabel:
            pred = (logits > 0).float()
            self.log("val/online_accuracy", (pred == targets).float().mean(), prog_bar=True)
        else:
            top1 = (logits.argmax(dim=1) == targets).float().mean()
            self.log("val/online_top1", top1, prog_bar=True)

    # ------------------------------------------------------------ safety
    def host_check_due(self) -> bool:
        """Whether this step reads device-side flags on the host: every step on the CPU
        (where it costs nothing), every ``HOST_CHECK_EVERY`` steps elsewhere."""
        return self.device.type == "cpu" or self.global_step % HOST_CHECK_EVERY == 0

    def on_before_backward(self, loss: Tensor) -> None:
        first = self._nonfinite_step
        bad = ~torch.isfinite(loss.detach()) & (first < 0)
        first.copy_(torch.where(bad, torch.full_like(first, self.global_step), first))
        if self.host_check_due():
            self.check_finite_loss()

    def check_finite_loss(self) -> None:
        """Stops the run if any loss so far was NaN or infinite (before the weights it
        corrupted are checkpointed)."""
        step = int(self._nonfinite_step)
        if step >= 0:
            raise NonFiniteLossError(
                f"the training loss became non-finite (NaN or inf) at step {step}. Lower the "
                "learning rate (optim.lr), add warmup (schedule.warmup_epochs) or check the "
                "input data; checkpoints written so far are kept."
            )

    def on_train_epoch_end(self) -> None:
        self.check_finite_loss()

    # ------------------------------------------------------------ optimisation
    def trainable_modules(self) -> list[nn.Module]:
        """Modules trained by the pretext loss: every child except the online probe."""
        return [m for name, m in self.named_children() if name != "online_probe"]

    def configure_optimizers(self) -> dict[str, Any]:
        keywords = getattr(self.optimizer_factory, "keywords", {})
        if "lr" not in keywords:
            raise ValueError("the optimizer config must set a base learning rate `lr`")
        world = self.trainer.world_size if self._trainer is not None else 1
        lr = keywords["lr"] * self.batch_size * world / self.base_batch_size
        weight_decay = keywords.get("weight_decay", 0.0)
        fixed = self.fixed_lr_modules()
        fixed_params = [p for module in fixed for p in module.parameters() if p.requires_grad]
        trainable = {id(p) for module in self.trainable_modules() for p in module.parameters()}
        if any(id(p) not in trainable for p in fixed_params):
            raise ValueError(
                f"{type(self).__name__}.fixed_lr_modules() names parameters outside its "
                "trainable_modules(); return submodules of the trained modules only."
            )
        no_decay_lr = None if self.no_decay_lr_scale == 1.0 else lr * self.no_decay_lr_scale
        groups = parameter_groups(
            self.trainable_modules(), weight_decay, skip=fixed_params, no_decay_lr=no_decay_lr
        )
        if fixed:
            groups += parameter_groups(
                fixed, weight_decay, no_decay_lr=no_decay_lr, **{FIXED_LR: True}
            )
        if self.online_probe is not None:
            groups.append({"params": list(self.online_probe.parameters()), "weight_decay": 0.0})
        optimizer = self.optimizer_factory(groups, lr=lr)
        if self.schedule_factory is None:
            return {"optimizer": optimizer}
        total_steps = int(self.trainer.estimated_stepping_batches)
        epochs = (
            self.trainer.max_epochs
            if self.trainer.max_epochs and self.trainer.max_epochs > 0
            else 1
        )
        steps_per_epoch = max(1, math.ceil(total_steps / epochs))
        scheduler = self.schedule_factory(
            optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch
        )
        _check_fixed_lr(optimizer, scheduler)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def fixed_lr_modules(self) -> list[nn.Module]:
        """Trained modules whose learning rate stays at its base value (linearly scaled, as
        every group's) while the schedule moves all other parameter groups; none by default.

        Their parameters form groups marked :data:`~sslkit.optim.FIXED_LR`, which the schedules
        of :mod:`sslkit.optim` leave at their initial rate (SimSiam's predictor)."""
        return []

    # ------------------------------------------------------------ EMA teachers
    def teachers(self) -> dict[str, EMATeacher]:
        """Every :class:`~sslkit.models.EMATeacher` among the method's modules, by its name.

        A method only registers its teacher; this class reads the run's length for it at the
        start of training and moves it after every optimiser step (``optimizer_step``)."""
        return {name: m for name, m in self.named_modules() if isinstance(m, EMATeacher)}

    def on_train_start(self) -> None:
        for teacher in self.teachers().values():
            teacher.on_train_start(self.trainer)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser's step, then one EMA step of every teacher (see
        :meth:`after_optimizer_step`)."""
        super().optimizer_step(*args, **kwargs)
        self.after_optimizer_step()

    def after_optimizer_step(self) -> None:
        """Move every teacher towards its student with the momentum of the optimiser step just
        taken, logged as ``train/tau`` (``train/<name>/tau`` when a method has several).

        It runs inside ``optimizer_step``, once per optimiser step (not per micro-batch), before
        the end-of-batch hooks, so a checkpoint written at the end of a step holds the
        teacher of that step."""
        teachers = self.teachers()
        for name, teacher in teachers.items():
            tau = teacher.after_optimizer_step(self.trainer)
            key = "train/tau" if len(teachers) == 1 else f"train/{name}/tau"
            self.log(key, tau, on_step=True, on_epoch=False)

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite_loss()
        checkpoint["sslkit_backbone"] = describe(self.backbone)


def _check_fixed_lr(optimizer: Optimizer, scheduler: Any) -> None:
    """Stop when a schedule ignores the groups marked ``FIXED_LR`` (one that is not built with
    ``sslkit.optim.scheduled_lambda``): their rate must stay the initial one."""
    fixed = [g for g in optimizer.param_groups if g.get(FIXED_LR)]
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if not fixed:
        return
    honoured = lambdas is not None and all(
        lam(step) == 1.0
        for lam, group in zip(lambdas, optimizer.param_groups, strict=True)
        if group.get(FIXED_LR)
        for step in (0, 1)
    )
    if not honoured or any(g["lr"] != g["initial_lr"] for g in fixed):
        raise ValueError(
            f"the schedule {type(scheduler).__name__} would move the learning rate of parameter "
            "groups that the method keeps at their base rate (fixed_lr_modules()); use a "
            "schedule of sslkit.optim (schedule=warmup_cosine or schedule=constant), which "
            "leaves them fixed, or turn the method's fixed learning rate off."
        )


@torch.no_grad()
def _frozen_features(encoder: nn.Module, images: Tensor) -> Tensor:
    """``encoder(images)`` in eval mode (BatchNorm statistics untouched), every submodule's
    mode restored afterwards."""
    modes = {module: module.training for module in encoder.modules()}
    try:
        encoder.eval()
        return encoder(images)
    finally:
        for module, training in modes.items():
            module.training = training


def split_views(
    views: list[Tensor] | tuple[Tensor, ...], expected: int, method: str
) -> list[Tensor]:
    """Check a batch carries the number of views a method needs, with a message that says why."""
    if len(views) != expected:
        raise ValueError(
            f"{method} needs {expected} augmented view(s) per image but the batch has "
            f"{len(views)}; pick a matching augmentation (e.g. augment=simclr gives 2 views)."
        )
    return list(views)


def require_labels(targets: Tensor, method: str, alternative: str = "") -> None:
    """Stop with a clear message when a batch holds unlabelled images (label -1).

    Args:
        targets: (B,) class labels of a pretraining batch.
        method: what needs the labels, e.g. ``"Supervised"``.
        alternative: a label-free way to train instead, appended to the message.
    """
    unlabelled = int((targets < 0).sum())
    if unlabelled:
        raise ValueError(
            f"{method} needs a class label for every training image, but {unlabelled} of the "
            f"{len(targets)} images in this batch are unlabelled (label -1). Train on a labelled "
            "dataset (for STL-10: data.source.unlabeled=false)"
            + (f", or {alternative}." if alternative else ".")
        )
