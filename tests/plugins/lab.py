"""A lab's own components, in a module of its own: citrus names them by import path
(`lab:margin_cpo`), reads their settings from the `params` node beside the name, and is not
edited. tests/test_plugins.py runs each; docs/extending.md walks through the same code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from citrus.data.benchmarks import LoadedTask
from citrus.data.schema import DataError, MCQuestion
from citrus.train.objectives import Preference, PreferenceLoss


def margin_sigmoid(chosen: torch.Tensor, rejected: torch.Tensor, algo: Any) -> torch.Tensor:
    """-log σ(β(c - r) - m): CPO's term with a required reward margin m (algorithm.params.margin),
    a hyper-parameter citrus itself does not have."""
    return -F.logsigmoid(algo.beta * (chosen - rejected) - algo.params.margin)


# the objective: reference-free, summed log-probs, plus cpo_alpha x the chosen reply's NLL
margin_cpo = Preference(PreferenceLoss(margin_sigmoid))


class Brevity:
    """An RL reward: 1 for a completion of at most reward.params.max_chars characters, else 0."""

    def __call__(self, completions: list, ctx: Any) -> list[float]:
        return [float(len(c.text) <= ctx.cfg.params.max_chars) for c in completions]


brevity = Brevity()


def pipe_table(task: Any, name: str, bench: Any, data_dir: Path) -> LoadedTask:
    """A benchmark loader for a file format citrus does not read: one question a line,
    `question | option | option | ... | answer letter`, the separator in task.params.sep."""
    path = Path(bench.data_root) / task.file
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        *text, answer = [cell.strip() for cell in line.split(task.params.sep)]
        if len(text) < 3:
            raise DataError(f"{path}: line {n}: a question and at least two options")
        options = {chr(ord("A") + i): option for i, option in enumerate(text[1:])}
        items.append(MCQuestion(f"{name}-{n}", name, text[0], options, answer))
    return LoadedTask(items, [path])
