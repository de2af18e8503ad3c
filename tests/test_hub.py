"""Model cards on every export, `citrus push` (its errors: there is no hub here) and `citrus
download` against a hub served on 127.0.0.1 (huggingface_hub's real client)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SMOKE, compose_config, run_cli
from hub_server import HubServer

from citrus.models import card, resolve_path

SECRET = "hf_citrus_test_token_do_not_log_8c1f"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("card") / "sft"
    result = run_cli("train", *SMOKE, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_an_export_carries_its_card(trained):
    facts = card.read(trained / "model")["citrus"]
    record = json.loads((trained / "run.json").read_text())
    data = {p: m["md5"] for p, m in record["inputs"].items() if m["role"].startswith("data/")}
    assert {d["path"]: d["md5"] for d in facts["data"]} == data and data
    assert facts["algorithm"]["name"] == "sft" and facts["trainer"]["max_steps"] == 6
    assert facts["command"] == record["command"] and facts["git"] == record["git"]
    assert facts["base_model"] == "tiny_llama (built from its config, random init)"
    text = (trained / "model" / "README.md").read_text()
    assert record["command"] in text and next(iter(data.values())) in text
    assert "Not evaluated yet" in text


def test_evaluating_an_export_adds_its_scores_with_intervals(trained, tmp_path):
    from huggingface_hub import ModelCard

    model = trained / "model"
    args = [a for a in SMOKE if a != "experiment=quickstart"]
    result = run_cli("evaluate", *args, f"model.path={model}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    task = json.loads((tmp_path / "metrics.json").read_text())["tasks"]["quickstart"]
    (evaluation,) = card.read(model)["citrus"]["evaluations"]
    assert evaluation["tasks"]["quickstart"]["accuracy"] == task["accuracy"]
    assert evaluation["protocol"] == "default"
    loaded = ModelCard.load(model / "README.md").data.eval_results
    assert [r.metric_value for r in loaded] == [task["accuracy"]]
    low, high = 100 * task["ci95_low"], 100 * task["ci95_high"]
    row = f"{100 * task['accuracy']:.1f}% [{low:.1f}, {high:.1f}]"
    assert row in (model / "README.md").read_text()
    run_cli("evaluate", *args, f"model.path={model}", f"hydra.run.dir={tmp_path}/again")
    assert len(card.read(model)["citrus"]["evaluations"]) == 1  # the same protocol: replaced


def test_a_model_trained_from_an_export_names_the_same_base(trained, tmp_path):
    result = run_cli(
        "train", *SMOKE, f"model.path={trained / 'model'}", "model.build=null",
        "algorithm=cpo_simpo", "data=quickstart_pairs", "trainer.max_steps=2",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    facts = card.read(tmp_path / "model")["citrus"]
    assert facts["started_from"] == str(trained / "model")
    assert facts["base_model"] == card.read(trained / "model")["citrus"]["base_model"]
    assert facts["algorithm"]["loss"] == "simpo"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_push_without_a_reachable_hub_says_so_and_keeps_the_token_out(trained, tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    env = {"HF_ENDPOINT": endpoint, "HF_TOKEN": SECRET}
    result = run_cli(
        "push", f"hub.run={trained}", "hub.repo_id=me/citrus-smoke", "logger=none",
        f"hydra.run.dir={tmp_path}", env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"push {trained / 'model'} to me/citrus-smoke at {endpoint}" in result.stderr
    assert "ConnectError" in result.stderr and "$HF_TOKEN" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="ignore"), path
    offline = run_cli(
        "push", f"hub.run={trained}", "hub.repo_id=me/citrus-smoke", "logger=none",
        f"hydra.run.dir={tmp_path}/offline", env={"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert offline.returncode == 1 and "HF_HUB_OFFLINE is set" in offline.stderr


def test_push_finds_the_stage_asked_for(tmp_path):
    from citrus.errors import ConfigError, MissingFileError
    from citrus.hub import model_to_push

    outputs = {"sft/model": str(tmp_path / "sft/model"), "preference/model": str(tmp_path / "p")}
    (tmp_path / "run.json").write_text(json.dumps({"outputs": outputs}))
    assert model_to_push(tmp_path, None) == tmp_path / "p"  # the last export
    assert model_to_push(tmp_path, "sft") == tmp_path / "sft/model"
    with pytest.raises(ConfigError, match=r"hub.stage='dpo'.*\['preference', 'sft'\]"):
        model_to_push(tmp_path, "dpo")
    with pytest.raises(MissingFileError, match="neither a model directory nor a run"):
        model_to_push(tmp_path / "nowhere", None)


@pytest.fixture(scope="module")
def hub():
    folder = Path(resolve_path(compose_config("train").model))  # the tiny Llama, built once
    with HubServer("citrus-test/tiny-llama", folder) as server:
        yield server


def download(hub_home: Path, endpoint: str, *extra: str, env: dict | None = None):
    return run_cli(
        "download", "model.path=citrus-test/tiny-llama", "model.build=null", "logger=none",
        f"hydra.run.dir={hub_home}/run-{len(list(hub_home.glob('run-*')))}", *extra,
        env={"HF_HOME": str(hub_home), "HF_ENDPOINT": endpoint, **(env or {})},
    )  # fmt: skip


def test_download_fetches_once_per_node_into_the_cache_every_loader_reads(hub, tmp_path):
    """Two processes of a node start at once: the files are fetched once; the model then loads
    with the hub switched off."""
    before = hub.downloads()
    env = {"HF_HOME": str(tmp_path), "HF_ENDPOINT": hub.url}
    both = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "citrus.cli",
                "download",
                "model.path=citrus-test/tiny-llama",
                "model.build=null",
                "logger=none",
                f"hydra.run.dir={tmp_path}/run-{i}",
            ],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    for p in both:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    assert hub.downloads() - before == len(hub.files)
    paths = {json.loads((tmp_path / f"run-{i}" / "run.json").read_text())["metrics"]["model_dir"]
             for i in range(2)}  # fmt: skip
    assert len(paths) == 1
    check = (
        "from transformers import AutoModelForCausalLM, AutoTokenizer; "
        "m = AutoModelForCausalLM.from_pretrained('citrus-test/tiny-llama'); "
        "AutoTokenizer.from_pretrained('citrus-test/tiny-llama'); print(type(m).__name__)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=300,
        env={**os.environ, **env, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert loaded.returncode == 0 and loaded.stdout.strip() == "LlamaForCausalLM", loaded.stderr


def test_download_without_the_hub_names_the_model_and_the_fix(tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    result = download(tmp_path, endpoint)
    assert result.returncode == 1
    assert "model.path=citrus-test/tiny-llama: not in the hub cache" in result.stderr
    assert endpoint in result.stderr and "citrus download model=" in result.stderr
    offline = download(tmp_path, endpoint, env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 1 and "HF_HUB_OFFLINE is set" in offline.stderr
