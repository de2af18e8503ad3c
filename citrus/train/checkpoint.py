"""Training checkpoints: one self-describing directory per saved step, written atomically.

    checkpoints/step-000200/
        state.ckpt            model, optimizer, scheduler, step, RNG states (fabric.save; a
                              directory of shards under FSDP2)
        citrus_config.yaml    the resolved config that produced it
        tokenizer files       so the directory loads on its own
        run.json              the run record at the time of saving

A checkpoint is written under `step-000200.tmp/` and renamed when complete, so a run killed
mid-save never leaves a directory that looks finished; `.tmp` leftovers are ignored and removed.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from citrus.data.schema import whole_records, write_jsonl_atomic
from citrus.errors import ConfigError, MissingFileError

log = logging.getLogger(__name__)
STEP_DIR = re.compile(r"^step-(\d{6,})$")
STATE = "state.ckpt"


def rng_state() -> dict[str, Any]:
    """This process's random state: CPU, and its own GPU's."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def rng_states(fabric: Any) -> list[dict[str, Any]]:
    """Every process's random state, by global rank (dropout draws differ per process, so a
    resumed run needs each one's own)."""
    if fabric.world_size == 1:
        return [rng_state()]
    states: list[Any] = [None] * fabric.world_size
    torch.distributed.all_gather_object(states, rng_state())
    return states


def restore_rng(states: list[dict[str, Any]], rank: int) -> None:
    state = states[rank]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def completed(root: Path) -> list[Path]:
    """Finished checkpoint directories under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / STATE).exists()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def find_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """What `trainer.resume` points at: null -> nothing; auto -> this run's newest checkpoint
    (nothing on a first run); a checkpoint directory, or a run directory (its newest)."""
    if not resume:
        return None
    if resume == "auto":
        found = completed(run_dir / "checkpoints")
        return found[-1] if found else None
    path = Path(resume)
    if (path / STATE).exists():
        return path
    found = completed(path / "checkpoints") or completed(path)
    if not found:
        raise MissingFileError(
            f"trainer.resume={resume}: no finished checkpoint (a step-NNNNNN/{STATE}) there"
        )
    return found[-1]


def save_checkpoint(
    fabric: Any,
    root: Path,
    step: int,
    state: dict[str, Any],
    cfg: Any,
    tokenizer: Any,
    run_record: Path | None,
    keep: int,
    filter: dict | None = None,
) -> Path:
    """Write step `step` under `root`; keep the newest `keep` checkpoints (0: all)."""
    final = root / f"step-{step:06d}"
    tmp = root / f"step-{step:06d}.tmp"
    if fabric.is_global_zero:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    fabric.barrier()
    fabric.save(tmp / STATE, state, filter=filter)
    if fabric.is_global_zero:
        (tmp / "citrus_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        tokenizer.save_pretrained(tmp)
        if run_record and run_record.is_file():
            shutil.copy2(run_record, tmp / "run.json")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for stale in [p for p in root.iterdir() if p.name.endswith(".tmp")]:
            shutil.rmtree(stale, ignore_errors=True)
        if keep > 0:
            for old in completed(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    fabric.barrier()
    log.info("checkpoint %s", final)
    return final


def forget_after(log_path: Path, step: int) -> None:
    """Drop the log lines of steps this run will (re)do, so the curve has each step once: those
    after the checkpoint it resumes from, all of them on a fresh start, and a line a kill cut."""
    if log_path.is_file():
        write_jsonl_atomic(
            log_path, [row for row in whole_records(log_path) if row["step"] <= step]
        )


def resume_training(training: Any, out_dir: Path) -> None:
    """Load trainer.resume's checkpoint, if any, and forget the log lines of steps to redo."""
    fabric, state = training.fabric, training.state
    checkpoint = find_checkpoint(training.cfg.trainer.resume, out_dir)
    if checkpoint:
        strict = training.saved_only is None
        try:
            fabric.load(checkpoint / "state.ckpt", state, strict=strict)
        except KeyError as e:  # saved before checkpoints carried the loss history
            if "losses" not in str(e):
                raise
            rest = {k: v for k, v in state.items() if k != "losses"}
            fabric.load(checkpoint / "state.ckpt", rest, strict=strict)
            state.update(rest)
        if isinstance(state["rng"], dict):  # saved before per-process states: one state
            state["rng"] = [state["rng"]]
        if len(state["rng"]) != fabric.world_size:
            raise ConfigError(
                f"{checkpoint} was saved by {len(state['rng'])} process(es), this run has "
                f"{fabric.world_size}: resume with the same trainer.devices x trainer.num_nodes"
            )
        restore_rng(state["rng"], fabric.global_rank)
        training.scheduler.load_state_dict(state["scheduler"])
        log.info("resumed from %s at step %d", checkpoint, state["step"])
    if fabric.is_global_zero:  # a fresh start (-1) keeps no row, not even step 0's validation
        for log_name in ("train_log.jsonl", "rollouts.jsonl"):
            forget_after(out_dir / log_name, state["step"] if checkpoint else -1)


def save_training(training: Any, step: int, out_dir: Path, run: Any) -> None:
    """A checkpoint of the run's Training state (citrus.train.trainer) at `step`."""
    t = training.cfg.trainer
    training.state.update(
        step=step, rng=rng_states(training.fabric), scheduler=training.scheduler.state_dict()
    )
    save_checkpoint(
        training.fabric, out_dir / "checkpoints", step, training.state, training.cfg,
        training.tokenizer, getattr(run.record, "path", None), t.keep_checkpoints,
        training.saved_only,
    )  # fmt: skip
