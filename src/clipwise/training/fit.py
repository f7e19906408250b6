"""Run a training from a config: data, model, Lightning trainer, final evaluation and the run folder.

Read top to bottom: prepare the data (manifest -> checked files -> splits -> decoded audio), resolve the
``auto`` settings from the training split, build the model and fit its normalisation, train with Lightning
(best + last checkpoints, early stopping, resumable), then, on rank 0 only, score val / test / clean-train
once with the best checkpoint and write predictions, summary.json and the report.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.accelerators import CPUAccelerator

from clipwise.config import Config
from clipwise.data.dataset import balanced_class_weights
from clipwise.data.leakage import leakage_summary
from clipwise.data.prepare import (
    RUN_DIR_ENV,
    PreparedData,
    clean_train_indices,
    default_run_dir,
    check_resumable,
    data_facts,
    prepare_data,
    steps_per_epoch,
    write_run_files,
)
from clipwise.evaluate.report import write_report
from clipwise.infer.predictor import Predictor
from clipwise.errors import RunError, UnsafeFileError
from clipwise.models.classifier import load_checkpoint
from clipwise.run import RunFolder
from clipwise.summary import RunSummary, score_splits, write_summary
from clipwise.training.callbacks import AtomicCheckpointIO, EpochMetricsCSV, PreciseBatchNorm, TimeBudget, WeightEMA
from clipwise.training.data import AudioDataModule, build_spec, fit_normalisation, prior_logits
from clipwise.training.module import ClassifierModule

PERFECT_SCORE_TOLERANCE = 1e-6


def _callbacks(config: Config, run: RunFolder, *, resumed_epoch: int | None, datamodule: AudioDataModule):
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    mode = "min" if config.train.monitor.endswith("loss") else "max"
    cbs = [
        ModelCheckpoint(dirpath=run.checkpoints_dir, filename="best", monitor=config.train.monitor, mode=mode,
                        save_top_k=1, enable_version_counter=False),
        # not save_last=True: since Lightning 2.6 that writes last.ckpt only in epochs that improve the monitor,
        # so a resume would restart from the best epoch and redo finished ones. This one saves every epoch.
        ModelCheckpoint(dirpath=run.checkpoints_dir, filename="last", save_top_k=1, enable_version_counter=False),
        EpochMetricsCSV(run, resumed_epoch=resumed_epoch),
    ]
    if config.train.ema is not None:
        cbs.append(WeightEMA(config.train.ema))
    if config.train.precise_bn:
        cbs.append(PreciseBatchNorm(datamodule.bn_dataloader))  # after the EMA: it recalibrates the average
    if config.train.max_minutes and resumed_epoch is None:
        cbs.append(TimeBudget(config.train.max_minutes))
    if config.train.patience:
        # Accuracy-like monitors top out at 1 and the best checkpoint is kept only on a strict improvement, so
        # once validation is perfect no later epoch can be chosen: the rest of the schedule would be wasted.
        # (Lightning compares with ">", hence a threshold just below 1.)
        perfect = None if mode == "min" else 1.0 - PERFECT_SCORE_TOLERANCE
        cbs.append(EarlyStopping(monitor=config.train.monitor, mode=mode, patience=config.train.patience,
                                 stopping_threshold=perfect))
    return cbs


def _weights_checksum(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _gather_checksums(trainer: L.Trainer, checksum: str) -> list[str]:
    if trainer.world_size == 1 or not torch.distributed.is_initialized():
        return [checksum]
    out: list[str] = [""] * trainer.world_size
    torch.distributed.all_gather_object(out, checksum)
    return out


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, as oneDNN reports); without it, bf16 mixed
    precision emulates every convolution and is many times slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN: nothing native to use either
        return False


def train(config: Config, *, out: str | Path | None = None, resume: bool = False,
          callbacks: Sequence[L.Callback] = ()) -> Path:
    """Train a model as ``config`` says and write its run folder.

    Args:
        config: a validated config; ``config.data.manifest`` names the data.
        out: the run folder (default: ``runs/<data>-<model>-<time>``).
        resume: continue from ``out/checkpoints/last.ckpt`` (the config is taken from the run folder).
        callbacks: Lightning callbacks added to clipwise's own (e.g. a sweep's pruning).

    Returns:
        The run folder.
    """
    run = RunFolder(out or default_run_dir(config))
    # DDP children re-run the command and must find this folder; set only during this call, or a later
    # train() in the same process would write into this run instead of a new one
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(run.root.resolve())
    try:
        with warnings.catch_warnings():
            # Lightning's pytree shim warns about a torch deprecation on every step; nothing a user can act on
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            return _train(run, config, resume=resume, callbacks=callbacks)
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous


def _train(run: RunFolder, config: Config, *, resume: bool, callbacks: Sequence[L.Callback] = ()) -> Path:
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    L.seed_everything(config.train.seed, workers=True, verbose=False)

    t0 = time.time()
    config, data = prepare_data(config)
    if resume:
        check_resumable(run, data)
    spec = build_spec(config, data.labels)
    per_epoch = steps_per_epoch(len(data.targets["train"]), config.data.batch_size)
    weights = None
    if config.train.class_weights == "balanced":
        weights = balanced_class_weights(data.targets["train"], len(data.labels)).tolist()
    module = ClassifierModule(spec.to_dict(), config.to_dict(), per_epoch, class_weights=weights)
    if data.task.multi_label and weights is None:
        # start every class at its base rate rather than p = 0.5 (with balanced weights 0.5 is the right start)
        module.model.init_output_bias(prior_logits(data.targets["train"], len(data.labels)))
    fit_normalisation(module.model, data.stores["train"])
    module.hparams.spec = spec.to_dict()
    datamodule = AudioDataModule(config, data, spec)
    prep_seconds = time.time() - t0

    ckpt_path = None
    resumed_epoch = None
    max_minutes = config.train.max_minutes
    if resume and run.last_checkpoint.is_file():
        ckpt_path, saved = _resume_checkpoint(run)
        resumed_epoch = int(saved["epoch"])
        if max_minutes:
            # the hard limit is what is left of the budget (the planned epochs are restored with the module);
            # a tenth of it at least, so a run cut off near its end can still finish its last epochs
            spent = float(saved.get("clipwise_train_seconds", 0.0)) / 60
            max_minutes = max(max_minutes - spent, 0.1 * max_minutes)
        del saved
    trainer = L.Trainer(
        max_epochs=config.train.epochs,
        accelerator=config.train.accelerator,
        devices=config.train.devices,
        num_nodes=config.train.num_nodes,
        strategy=config.train.strategy,
        precision="bf16-mixed" if config.train.precision == "bf16" else "32-true",
        gradient_clip_val=config.train.grad_clip,
        callbacks=[*_callbacks(config, run, resumed_epoch=resumed_epoch, datamodule=datamodule), *callbacks],
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=config.train.progress,
        enable_model_summary=False,
        default_root_dir=str(run.root),
        max_time={"minutes": max_minutes} if max_minutes else None,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        reload_dataloaders_every_n_epochs=1,  # a new epoch seed for crops and gains each epoch
    )
    if config.train.precision == "bf16" and isinstance(trainer.accelerator, CPUAccelerator) \
            and not cpu_has_native_bf16():
        warnings.warn("train.precision=bf16 on a CPU without native bf16 instructions (oneDNN reports none): "
                      "convolutions are emulated and run about 10x slower than float32 (measured: an audiocnn "
                      "training step on an AVX2 CPU); set train.precision=32 on this machine", UserWarning,
                      stacklevel=2)
    if trainer.is_global_zero:
        write_run_files(run, config, data, kind="deep")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:
        # Lightning turns Ctrl+C into sys.exit(1); hand the interrupt on so the CLI can say how to resume
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    train_seconds = module.train_seconds()  # a resumed run counts its earlier processes too
    checksums = _gather_checksums(trainer, _weights_checksum(module.model))
    if not trainer.is_global_zero:
        return run.root
    finish_run(run, config, data, trainer=trainer, train_seconds=train_seconds, prep_seconds=prep_seconds,
               checksums=checksums)
    return run.root


def finish_run(run: RunFolder, config: Config, data: PreparedData, *, trainer: L.Trainer, train_seconds: float,
               prep_seconds: float, checksums: list[str]) -> None:
    """Score val, test and the clean-train subset once with the best checkpoint; write predictions,
    summary.json and the report."""
    best = run.best_checkpoint if run.best_checkpoint.is_file() else run.last_checkpoint
    predictor = Predictor.from_checkpoint(best, hop_fraction=config.data.eval_hop_fraction,
                                          batch_size=config.data.batch_size)
    clean = clean_train_indices(len(data.targets["train"]), config.data.clean_train_clips, seed=config.train.seed)
    parts = {
        "val": (data.stores["val"], data.targets["val"]),
        "test": (data.stores["test"], data.targets["test"]),
        "train_clean": (data.stores["train"].subset(clean), data.targets["train"][clean]),
    }
    t0 = time.time()
    scored = {split: (store.paths, y, predictor.predict_store(store)) for split, (store, y) in parts.items() if len(y)}
    scores = score_splits(run, data.task, data.labels, scored)
    eval_seconds = time.time() - t0
    n_scored = sum(len(y) for _, y, _ in scored.values())
    metrics = run.read_metrics() if run.metrics_path.is_file() else pd.DataFrame()
    module = trainer.lightning_module
    summary = RunSummary(
        kind="deep",
        scores=scores,
        baseline=data.task.baseline(data.targets["train"],
                                    data.targets["test"] if len(data.targets["test"]) else data.targets["val"]),
        data=data_facts(config, data),
        model={"name": config.model.name, "params": predictor.model.num_parameters()},
        leakage=leakage_summary(data.leakage),
        timing={
            "prepare_seconds": round(prep_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "train_clips_per_second": round(
                len(data.targets["train"]) * max(1, len(metrics)) / max(train_seconds, 1e-9), 1),
            "eval_clips_per_second": round(n_scored / max(eval_seconds, 1e-9), 1),
        },
        extra=dict(
            best_epoch=_best_epoch(best),
            epochs_run=int(len(metrics)),
            monitor=config.train.monitor,
            best_checkpoint=best.name,
            stopped_early=bool(trainer.should_stop and trainer.current_epoch < config.train.epochs),
            diverged=getattr(module, "diverged", None),
            epochs_planned=int(getattr(module, "planned_epochs", config.train.epochs)),
            ema_decay=next((cb.decay() for cb in trainer.callbacks if isinstance(cb, WeightEMA)), None),
            interrupted=bool(trainer.interrupted),
            distributed={"world_size": trainer.world_size, "weights_checksums": checksums,
                         "weights_identical": len(set(checksums)) == 1},
        ),
    )
    write_summary(run, summary)
    write_report(run.root)


def _resume_checkpoint(run: RunFolder) -> tuple[str, dict]:
    """The checkpoint to resume from: last.ckpt, or the one before it when last.ckpt cannot be read (a crash or a
    full disk while it was written).

    Raises:
        RunError, UnsafeFileError: neither can be read (both named).
    """
    last, previous = run.last_checkpoint, AtomicCheckpointIO.previous(run.last_checkpoint)
    try:
        return str(last), load_checkpoint(last)
    except UnsafeFileError:
        raise
    except RunError as err:
        if not previous.is_file():
            raise RunError(f"{err}; there is no earlier checkpoint to resume from, so train the run again "
                           "(--overwrite keeps this one aside)") from None
        warnings.warn(f"{last} cannot be read ({err}); resuming from {previous.name}, the epoch before",
                      UserWarning, stacklevel=2)
        try:
            return str(previous), load_checkpoint(previous)
        except RunError as err2:
            raise RunError(f"neither {last.name} nor {previous.name} in {run.checkpoints_dir} can be read "
                           f"({err2}); train the run again (--overwrite keeps this one aside)") from None


def _best_epoch(path: Path) -> int:
    """0-based epoch at whose end the checkpoint was written."""
    return int(load_checkpoint(path).get("epoch", 0))
