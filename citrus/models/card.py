"""The model card of an exported model: README.md in its directory, as the hub shows it.

Training writes it (where the model started, the data with md5s, the algorithm and trainer
hyper-parameters, the command that reproduces it); each evaluation of that directory adds its
accuracy with the 95% interval. The facts live in the card's YAML header (the hub's
`model-index` for the scores, a `citrus:` block for the rest), and the text is drawn from them, so
a card can be read back, extended and pushed with the weights (`citrus push`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

log = logging.getLogger(__name__)
CARD = "README.md"
# the trainer keys a card lists: what the result depends on, not where it ran
HPARAMS = ("precision", "micro_batch_size", "grad_accum_steps", "max_steps", "max_epochs", "lr",
           "weight_decay", "betas", "warmup_ratio", "min_lr_ratio", "max_grad_norm", "packing",
           "devices", "num_nodes", "strategy")  # fmt: skip


def read(model_dir: Path) -> dict[str, Any] | None:
    """The facts of a citrus card in model_dir, or None (no card, or not one citrus wrote)."""
    from huggingface_hub import ModelCard

    path = Path(model_dir) / CARD
    if not path.is_file():
        return None
    try:  # a model's own README may be anything: not ours, then
        data = ModelCard.load(path, ignore_metadata_errors=True).data.to_dict()
    except Exception as e:  # noqa: BLE001
        log.warning("%s: not a readable model card (%s); left alone", path, e)
        return None
    return data if "citrus" in data else None


def training_facts(cfg: Any, record: dict[str, Any], stage: str) -> dict[str, Any]:
    """What an export is: its base model (through the card of the export it started from), the
    data it trained on with md5s, the algorithm and trainer settings, and how to make it again."""
    start = str(cfg.model.path)
    parent = read(Path(start)) if Path(start).is_dir() else None
    base = parent["citrus"]["base_model"] if parent else start
    if cfg.model.build is not None and not parent:
        base = f"{cfg.model.name} (built from its config, random init)"
    return {
        "name": cfg.name,
        "stage": stage,
        "base_model": base,
        "started_from": start,
        "algorithm": OmegaConf.to_container(cfg.algorithm, resolve=True),
        # what an online (RL) stage's rollouts were scored by
        **(
            {"reward": OmegaConf.to_container(cfg.reward, resolve=True)}
            if cfg.data.format == "prompt"
            else {}
        ),  # fmt: skip
        "adapter": cfg.adapter.name,
        "trainer": {k: OmegaConf.to_container(cfg.trainer, resolve=True)[k] for k in HPARAMS},
        "seed": cfg.seed,
        "data": [
            {"role": meta["role"], "path": path, "md5": meta["md5"]}
            for path, meta in record.get("inputs", {}).items()
            if meta["role"].startswith("data/")
        ],
        "command": record.get("command"),
        "git": record.get("git"),
        "evaluations": [],
    }


def evaluation_facts(result: dict[str, Any]) -> dict[str, Any]:
    """One evaluation of the model, from evaluate()'s result: per task accuracy, n, 95% CI."""
    keep = ("accuracy", "ci95_low", "ci95_high", "n", "valid_accuracy")
    return {
        "benchmark": result["benchmark"],
        "protocol": result["protocol"],
        "mode": result["mode"],
        "tasks": {t: {k: m[k] for k in keep if k in m} for t, m in result["tasks"].items()},
    }


def write(model_dir: Path, facts: dict[str, Any]) -> Path:
    """README.md from the facts: the hub's header (base_model, tags, model-index) and the text."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    local = Path(facts["base_model"]).exists() or " " in facts["base_model"]
    results = [
        EvalResult(
            task_type="multiple-choice",
            dataset_type=e["benchmark"],
            dataset_name=f"{task} ({e['protocol']} protocol)",
            metric_type="accuracy",
            metric_value=m["accuracy"],
        )  # fmt: skip
        for e in facts["evaluations"]
        for task, m in e["tasks"].items()
    ]
    data = ModelCardData(
        base_model=None if local else facts["base_model"],
        library_name="transformers",
        tags=["citrus", "medical", facts["algorithm"]["name"]],
        model_name=f"{facts['name']}-{facts['stage']}",
        eval_results=results or None,
        citrus=facts,
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body(facts)}")
    path = Path(model_dir) / CARD
    tmp = path.with_name(f".{CARD}.{os.getpid()}.tmp")
    card.save(tmp)
    os.replace(tmp, path)  # readers never see half a card; a symlinked README is replaced, not
    return path  # written through (a hub cache blob stays as it was)


def add_evaluation(model_dir: Path, result: dict[str, Any]) -> Path | None:
    """Add an evaluation to the card of a citrus export (other models are left alone); the same
    benchmark and protocol evaluated again replaces the older scores."""
    data = read(model_dir)
    if data is None:
        return None
    facts, new = data["citrus"], evaluation_facts(result)
    facts["evaluations"] = [
        e
        for e in facts.get("evaluations", [])
        if (e["benchmark"], e["protocol"], e["mode"])
        != (new["benchmark"], new["protocol"], new["mode"])
    ] + [new]
    return write(model_dir, facts)


def body(facts: dict[str, Any]) -> str:
    algorithm = facts["algorithm"]
    params = ", ".join(f"{k}={v}" for k, v in algorithm.items() if k != "name")
    lines = [
        f"# {facts['name']}: {facts['stage']} stage",
        "",
        f"Trained with citrus ({algorithm['name']}) from "
        f"`{facts['started_from']}`; base model: `{facts['base_model']}`.",
        "",
        "## Training",
        "",
        f"- algorithm: {algorithm['name']} ({params})",
        *(
            [f"- reward: {facts['reward']['name']} ({facts['reward']['weights']})"]
            if "reward" in facts
            else []
        ),  # fmt: skip
        f"- adapter: {facts['adapter']}; seed: {facts['seed']}",
        "- trainer: " + ", ".join(f"{k}={v}" for k, v in facts["trainer"].items()),
        "",
        "| data | file | md5 |",
        "|---|---|---|",
        *(f"| {d['role']} | `{d['path']}` | `{d['md5']}` |" for d in facts["data"]),
        "",
        "## Evaluation",
        "",
    ]
    if not facts["evaluations"]:
        lines.append("Not evaluated yet: `citrus evaluate model.path=<this directory>` adds it.")
    else:
        lines += [
            "| benchmark | protocol | mode | n | accuracy [95% CI] |",
            "|---|---|---|---|---|",
        ]
        for e in facts["evaluations"]:
            for task, m in e["tasks"].items():
                ci = (
                    f" [{100 * m['ci95_low']:.1f}, {100 * m['ci95_high']:.1f}]"
                    if "ci95_low" in m
                    else ""
                )
                lines.append(
                    f"| {task} | {e['protocol']} | {e['mode']} | {m.get('n', '')} | "
                    f"{100 * m['accuracy']:.1f}%{ci} |"
                )
    git = facts.get("git") or {}
    lines += [
        "",
        "## Reproduce",
        "",
        f"At commit `{git.get('commit')}`"
        + (" (with uncommitted changes):" if git.get("dirty") else ":"),
        "",
        "```bash",
        str(facts["command"]),
        "```",
    ]
    if facts["stage"] not in ("train",):
        lines.append(f"\n(this model is the `{facts['stage']}` stage's export of that run)")
    return "\n".join(lines) + "\n"
