"""The OpenAI-compatible engine against a real HTTP server on 127.0.0.1 serving a real tiny
model: replies, concurrency, retries on injected faults, the response cache, and the API key."""

from __future__ import annotations

import json

import pytest
from chat_server import ChatServer
from conftest import compose_config

from citrus.data import quickstart
from citrus.engines import build_engine
from citrus.engines.hf import HFEngine
from citrus.errors import EngineError
from citrus.prompts import build_messages

SECRET = "sk-openai-engine-test-9876543210"


@pytest.fixture(scope="module")
def hf_engine():
    cfg = compose_config("evaluate", ["model=tiny_llama", "engine.max_new_tokens=12"])
    return HFEngine(cfg.engine, cfg.model)


def openai_engine(url: str, tmp_path, *overrides: str):
    cfg = compose_config(
        "evaluate",
        [
            "model=tiny_llama",
            "engine=openai",
            f"engine.base_url={url}",
            "engine.max_new_tokens=12",
            "engine.backoff_s=0.01",
            "engine.max_backoff_s=0.1",
            "engine.timeout_s=1",
            f"engine.cache_path={tmp_path / 'cache.jsonl'}",
            *overrides,
        ],
    )
    return build_engine(cfg.engine, cfg.model)


@pytest.fixture(scope="module")
def conversations():
    return [build_messages(q, "quickstart") for q in quickstart.generate("test", 6, seed=3)]


def test_replies_equal_the_model_served_directly(hf_engine, conversations, tmp_path):
    expected = hf_engine.generate(conversations)
    with ChatServer(hf_engine) as server:
        engine = openai_engine(server.url, tmp_path, "engine.concurrency=3")
        arrived = []
        replies = engine.generate(conversations, on_batch=lambda idx, r: arrived.extend(idx))
    assert replies == expected
    assert sorted(arrived) == list(range(6)) and server.seen == {"ok": 6}


def test_faults_are_retried_and_every_item_completes(hf_engine, conversations, tmp_path):
    # all on the first request
    faults = ["429", "500", "drop", "truncate", "malformed", "slow", "429", "500"]
    with ChatServer(hf_engine, faults=faults) as server:
        engine = openai_engine(server.url, tmp_path, "engine.concurrency=1", "engine.max_retries=8")
        replies = engine.generate(conversations)
    assert replies == hf_engine.generate(conversations)
    assert server.seen["429"] == 2 and server.seen["500"] == 2 and server.seen["drop"] == 1
    assert server.seen["truncate"] == server.seen["malformed"] == 1
    assert server.seen["slow"] == 1  # timed out at 1 s, retried
    assert engine.stats["retries"] == len(faults)
    assert engine.stats["requests"] == len(faults) + len(conversations)  # every HTTP attempt


def test_a_rerun_never_pays_twice(hf_engine, conversations, tmp_path):
    with ChatServer(hf_engine) as server:
        first = openai_engine(server.url, tmp_path).generate(conversations[:4])
        assert server.seen["ok"] == 4
        rerun = openai_engine(server.url, tmp_path)
        again = rerun.generate(conversations)
    assert again[:4] == first and server.seen["ok"] == 6  # only the 2 new requests were sent
    assert rerun.stats["cached"] == 4
    lines = (tmp_path / "cache.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["key"] for line in lines)


def test_retries_exhausted_raise_and_keep_finished_work(hf_engine, conversations, tmp_path):
    with ChatServer(hf_engine, faults=["ok", "500", "500", "500"]) as server:
        engine = openai_engine(server.url, tmp_path, "engine.concurrency=1", "engine.max_retries=2")
        with pytest.raises(EngineError, match="gave up after 2 retries \\(last: HTTP 500\\)"):
            engine.generate(conversations[:2])
    assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == 1  # the finished one is kept


def test_api_key_comes_from_the_environment_and_is_never_written(
    hf_engine, conversations, tmp_path, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # another variable's key is never taken
    with ChatServer(hf_engine, api_key=SECRET) as server:
        keyless = openai_engine(server.url, tmp_path, "engine.api_key_env=CITRUS_TEST_KEY")
        with pytest.raises(EngineError, match="HTTP 401"):
            keyless.generate(conversations[:1])
        assert keyless.stats["requests"] == 1 and keyless.stats["retries"] == 0  # failed at once
        with pytest.raises(EngineError, match="HTTP 401"):
            list(keyless.stream(conversations[0]))
        assert server.auth == [None, None]  # no key: no Authorization header, not a placeholder
        monkeypatch.setenv("CITRUS_TEST_KEY", SECRET)
        keyed = openai_engine(server.url, tmp_path, "engine.api_key_env=CITRUS_TEST_KEY")
        assert keyed.generate(conversations[:1]) == ["".join(keyed.stream(conversations[0]))]
    assert SECRET not in (tmp_path / "cache.jsonl").read_text()


def test_per_request_seeds_are_sent_and_keep_samples_apart_in_the_cache(
    hf_engine, conversations, tmp_path
):
    with ChatServer(hf_engine) as server:
        engine = openai_engine(server.url, tmp_path)
        engine.generate([conversations[0]] * 3, seeds=[0, 1, 2])
        assert server.seen["ok"] == 3  # three samples, three requests
        engine.generate([conversations[0]] * 3, seeds=[0, 1, 2])
        assert server.seen["ok"] == 3 and engine.stats["cached"] == 3
    seeds = [engine.request_body(conversations[0], k)["seed"] for k in range(3)]
    assert seeds == [0, 1, 2]


def test_max_completion_tokens_is_sent_and_length_cut_replies_are_counted(
    hf_engine, conversations, tmp_path
):
    with ChatServer(hf_engine, finish_reason="length") as server:
        # ++: sets it whether or not conf/engine/openai.yaml lists the key
        engine = openai_engine(server.url, tmp_path, "++engine.max_completion_tokens=true")
        replies = engine.generate(conversations[:3])
        assert engine.generate(conversations[:3]) == replies  # from the cache: counted once
    assert len(server.bodies) == 3
    assert all(b["max_completion_tokens"] == 12 and "max_tokens" not in b for b in server.bodies)
    assert engine.stats["truncated"] == 3 and engine.stats["cached"] == 3
    default = openai_engine("http://127.0.0.1:1/v1", tmp_path)
    assert default.request_body(conversations[0])["max_tokens"] == 12  # what vLLM reads


def test_missing_base_url_is_a_clear_error():
    cfg = compose_config("evaluate", ["engine=openai"])
    with pytest.raises(ValueError, match="engine.base_url: set the server's URL"):
        build_engine(cfg.engine, cfg.model)


def test_a_fine_tune_served_under_the_base_name_never_gets_the_base_replies(
    hf_engine, conversations, tmp_path
):
    """One server, one served name, two models behind it: the cache keys on the weights at
    model.path and on the endpoint, not on the name alone."""
    import shutil

    from safetensors.torch import load_file, save_file

    from citrus.models import resolve_path

    base_dir = resolve_path(compose_config("evaluate", ["model=tiny_llama"]).model)
    tuned_dir = tmp_path / "tuned"
    shutil.copytree(base_dir, tuned_dir)
    weights = load_file(tuned_dir / "model.safetensors")
    for name in weights:  # what a fine-tune does: every matrix moves a little
        weights[name] = weights[name] + 0.05 * (name.endswith("weight"))
    save_file(weights, tuned_dir / "model.safetensors", metadata={"format": "pt"})
    cfg = compose_config(
        "evaluate", ["model=tiny_llama", f"model.path={tuned_dir}", "engine.max_new_tokens=12"]
    )
    tuned = HFEngine(cfg.engine, cfg.model)
    name = ["engine.served_model=tiny"]
    with ChatServer(hf_engine) as server:
        base_replies = openai_engine(server.url, tmp_path, *name).generate(conversations[:3])
        server.engine = tuned  # the fine-tune now answers under the same name
        engine = openai_engine(server.url, tmp_path, *name, f"model.path={tuned_dir}")
        tuned_replies = engine.generate(conversations[:3])
        again = openai_engine(server.url, tmp_path, *name).generate(conversations[:3])
        assert server.seen["ok"] == 6 and engine.stats["cached"] == 0
    assert tuned_replies == tuned.generate(conversations[:3]) != base_replies
    assert again == base_replies  # the base model's replies are still cached for the base model
    with ChatServer(hf_engine) as other:  # the same model behind another endpoint: asked anew
        openai_engine(other.url, tmp_path, *name).generate(conversations[:1])
        assert other.seen["ok"] == 1
