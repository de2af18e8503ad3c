"""Every shipped config composes; typos and wrong types fail at compose time, naming the key."""

from __future__ import annotations

import re

import pytest
from conftest import compose_config, run_cli
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ValidationError

from citrus.config import CONF_DIR, EXPERIMENTS_DIR, SWEEPS_DIR, BenchmarkTask
from citrus.engines import check_engines
from citrus.errors import ConfigError

GROUPS = [
    "model",
    "data",
    "algorithm",
    "adapter",
    "benchmark",
    "engine",
    "trainer",
    "logger",
    "roles",
]
REQUIRED = {("engine", "replay"): ["engine.path=run_dir"]}  # options with a ??? to fill
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)


TASKS = sorted(p.stem for p in (CONF_DIR / "benchmark" / "task").glob("*.yaml"))


@pytest.mark.parametrize("task", TASKS)
def test_every_benchmark_task_is_a_group_of_its_own_and_in_a_group(task):
    alone = compose_config("evaluate", [f"benchmark={task}"]).benchmark
    assert list(alone.tasks) == [task] and alone.name == task
    assert alone.tasks[task] == OmegaConf.merge(
        OmegaConf.structured(BenchmarkTask),
        OmegaConf.load(CONF_DIR / "benchmark" / "task" / f"{task}.yaml"),
    )


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_group_option_composes_and_resolves(group, option):
    cfg = compose_config("train", [f"{group}={option}", *REQUIRED.get((group, option), [])])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    check_engines(cfg)  # the job's and every role's engine against its class's settings
    source = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"))
    assert_contains(OmegaConf.to_container(cfg[group]), source, group)


def assert_contains(composed, source, where):
    """Every value the option file sets is what the composed config holds."""
    for key, value in source.items():
        if key == "defaults":
            continue
        if isinstance(value, dict):
            assert_contains(composed[key], value, f"{where}.{key}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, item in enumerate(value):
                assert_contains(composed[key][i], item, f"{where}.{key}.{i}")
        elif value != "???":  # a required value: the test filled it in
            assert composed[key] == value, f"{where}.{key}"


ROLES = sorted(p.stem for p in (CONF_DIR / "role").glob("*.yaml"))


@pytest.mark.parametrize("role", ROLES)
def test_every_role_composes_as_the_answer_mapper(role):
    cfg = compose_config("evaluate", [f"role@roles.answer_mapper={role}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    mapper = cfg.roles.answer_mapper
    assert mapper.name == role and (mapper.engine is None) == (mapper.model is None)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_experiment_preset_composes_and_documents_its_command(path):
    header = path.read_text().splitlines()
    assert header[0] == "# @package _global_", f"{path} must be a _global_ preset"
    assert any(
        line.lstrip("# ").startswith("citrus ") and f"experiment={path.stem}" in line
        for line in header
    ), f"{path}: the header must show the command that runs it"
    for job in ("train", "evaluate", "pipeline"):
        cfg = compose_config(job, [f"experiment={path.stem}"])
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("path", sorted(SWEEPS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_sweep_composes(path):
    cfg = compose_config("train", [f"sweep={path.stem}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_quickstart_preset_overrides_the_defaults():
    cfg = compose_config("train", ["experiment=quickstart"])
    preset = OmegaConf.to_container(OmegaConf.load(EXPERIMENTS_DIR / "quickstart.yaml"))
    assert_contains(OmegaConf.to_container(cfg.trainer), preset["trainer"], "trainer")
    assert cfg.trainer.lr != compose_config("train").trainer.lr
    assert cfg.name == "quickstart"
    assert cfg.model.build.num_attention_heads * 64 == cfg.model.build.hidden_size  # head_dim 64


@pytest.mark.parametrize(
    "override,error,key",
    [
        ("trainer.max_stepz=5", ConfigAttributeError, "trainer.max_stepz"),
        ("model.dtyp=bfloat16", ConfigAttributeError, "model.dtyp"),
        ("trainer.max_steps=ten", ValidationError, "trainer.max_steps"),
        ("trainer.lr=fast", ValidationError, "trainer.lr"),
        ("engine.batch_sizee=3", ConfigAttributeError, "engine.batch_sizee"),
    ],
)
def test_bad_override_fails_at_compose_time_naming_the_key(override, error, key):
    with pytest.raises(ConfigCompositionException) as info:
        compose_config("train", [override])
    cause = info.value.__cause__
    assert isinstance(cause, error), repr(cause)
    assert key in str(info.value) + str(cause)


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["engine.batch_size=[1,2]"], "engine.batch_size"),
        (["engine=vllm", "engine.tensor_parallel_size=eight"], "engine.tensor_parallel_size"),
        (
            ["role@roles.critic=openai", "roles.critic.engine.concurrency=many"],
            "roles.critic.engine.concurrency",
        ),
    ],
)
def test_engine_settings_are_typed_by_the_engine_before_a_job_starts(overrides, key):
    """An engine declares its own settings; a wrong type fails naming the key and the schema."""
    with pytest.raises(ConfigError, match=re.escape(key)):
        check_engines(compose_config("evaluate", overrides))


def test_an_engine_class_that_cannot_be_imported_is_named():
    cfg = compose_config("evaluate", ["engine.class_path=citrus.engines.hf:NoSuchEngine"])
    with pytest.raises(ConfigError, match="engine.class_path=citrus.engines.hf:NoSuchEngine"):
        check_engines(cfg)


def test_unknown_group_option_lists_the_available_ones():
    with pytest.raises(Exception) as info:
        compose_config("train", ["model=tiny_lama"])
    assert "tiny_lama" in str(info.value) and "tiny_llama" in str(info.value)


def test_cli_reports_a_misspelled_override_and_fails():
    result = run_cli("train", "trainer.max_stepz=5", "logger=none")
    assert result.returncode != 0
    assert "max_stepz" in result.stderr and "TrainerConfig" in result.stderr


def test_cli_help_lists_every_job():
    from citrus.cli import JOBS

    result = run_cli("--help")
    assert result.returncode == 0
    for job in JOBS:
        assert f"  {job}" in result.stdout


def test_cli_rejects_an_unknown_job():
    result = run_cli("trian")
    assert result.returncode == 2 and "unknown job 'trian'" in result.stderr


def test_cli_prints_the_composed_config():
    result = run_cli("train", "experiment=quickstart", "trainer.max_steps=7", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.job == "train" and cfg.trainer.max_steps == 7 and cfg.name == "quickstart"


@pytest.mark.parametrize(
    "model,path",
    [
        ("citrus1.0-llama-70b", "jdh-algo/Citrus1.0-llama-70B"),
        ("citrus1.0-qwen-72b", "jdh-algo/Citrus1.0-Qwen-72B"),
    ],
)
def test_released_models_serve_on_8_gpus_as_the_citrus_readme_does(model, path):
    from citrus.serve import server_command

    cfg = compose_config("serve", [f"model={model}"])
    cmd = server_command(cfg)
    assert (
        cmd[cmd.index("--model") + 1] == path
        and cmd[cmd.index("--tensor-parallel-size") + 1] == "8"
    )
    assert (
        cmd[cmd.index("--served-model-name") + 1] == model and "--chat-template" not in cmd
    )  # the tokenizer's own
    assert (
        compose_config("evaluate", [f"model={model}", "engine=vllm"]).engine.tensor_parallel_size
        == 8
    )
    local = compose_config(
        "evaluate", [f"model={model}", "engine=local_vllm", "serve.port=8123"]
    ).engine
    assert (local.base_url, local.served_model, local.api_key_env) == (
        "http://127.0.0.1:8123/v1",
        model,
        "CITRUS_SERVE_API_KEY",  # the key `citrus serve` requires, when that variable is set
    )


def test_a_server_other_machines_reach_needs_a_key(monkeypatch):
    """0.0.0.0 without a key is refused (unless allowed); with one, vLLM gets it through its
    VLLM_API_KEY variable, never on the command line that `ps` shows."""
    from citrus.errors import ConfigError
    from citrus.serve import api_key, check_exposure, server_command

    monkeypatch.delenv("CITRUS_SERVE_API_KEY", raising=False)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    exposed = compose_config("serve", ["model=qwen2.5-0.5b-instruct", "serve.host=0.0.0.0"])
    with pytest.raises(ConfigError, match=r"serve.host=0.0.0.0 .*\$CITRUS_SERVE_API_KEY"):
        check_exposure(exposed, api_key(exposed))
    check_exposure(compose_config("serve", ["model=qwen2.5-0.5b-instruct"]), None)  # loopback
    allowed = compose_config(
        "serve",
        ["model=qwen2.5-0.5b-instruct", "serve.host=0.0.0.0", "serve.allow_unauthenticated=true"],
    )
    check_exposure(allowed, None)
    monkeypatch.setenv("CITRUS_SERVE_API_KEY", "sk-test-key-1")
    assert api_key(exposed) == "sk-test-key-1"
    check_exposure(exposed, api_key(exposed))
    assert "sk-test-key-1" not in " ".join(server_command(exposed))


def test_a_chat_template_override_reaches_the_vllm_server():
    from citrus.serve import server_command

    cmd = server_command(
        compose_config(
            "serve", ["model=qwen2.5-0.5b-instruct", "model.chat_template='{{ messages }}'"]
        )
    )
    assert cmd[cmd.index("--chat-template") + 1] == "{{ messages }}"


@pytest.mark.parametrize("path", sorted(EXPERIMENTS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_debug_smoke_shrinks_every_preset_to_one_cpu_process(path):
    cfg = compose_config("pipeline", [f"experiment={path.stem}", "debug=smoke"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert cfg.model.name == "tiny_llama" and cfg.engine.name == "hf" and cfg.logger.name == "none"
    t = cfg.trainer
    assert (t.accelerator, t.devices, t.num_nodes, t.strategy, t.max_steps) == (
        "cpu",
        1,
        1,
        "auto",
        4,
    )
    assert all(
        role.engine is None for role in cfg.roles.values()
    )  # the tiny model plays every part
    assert list(cfg.pipeline.sft_data) == ["quickstart", "quickstart"]


@pytest.mark.parametrize(
    "preset,backbone",
    [("citrus_llama70b", "llama-3.1-70b-instruct"), ("citrus_qwen72b", "qwen2.5-72b-instruct")],
)
def test_citrus_presets_chain_the_three_sft_stages_then_cpo_simpo_on_a_cluster(preset, backbone):
    cfg = compose_config("pipeline", [f"experiment={preset}"])
    assert cfg.model.name == backbone and list(cfg.pipeline.sft_data) == [
        "citrus_s1",
        "citrus_s2",
        "citrus_s3",
    ]
    assert (
        list(cfg.pipeline.stages) == ["sft", "sample", "preference"]
        and cfg.pipeline.preference.algorithm == "cpo_simpo"
    )
    t = cfg.trainer
    assert (
        t.strategy,
        t.devices * t.num_nodes,
        t.precision,
        t.gradient_checkpointing,
        t.resume,
    ) == ("fsdp2", 32, "bf16-mixed", True, "auto")
    assert t.global_batch_size == t.micro_batch_size * t.grad_accum_steps * t.devices * t.num_nodes


def test_slurm_launcher_takes_nodes_and_gpus_from_the_trainer_and_requeues():
    from hydra import compose, initialize_config_dir

    from citrus.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "job=pipeline",
                "experiment=citrus_qwen72b",
                "hydra/launcher=citrus_slurm",
                "hydra.launcher.partition=gpu",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (
        launcher.nodes,
        launcher.gpus_per_node,
        launcher.tasks_per_node,
        launcher.partition,
    ) == (4, 8, 8, "gpu")
    assert launcher.max_num_timeout > 0 and launcher.setup
