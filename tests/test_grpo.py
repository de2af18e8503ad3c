"""GRPO: the loss against TRL's GRPOTrainer on the same model, rollout and rewards, each side
padding, scoring and normalizing them its own way; advantages, the k3 KL and the rewards on
worked cases; the rollout's token ids and batches."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch
from conftest import compose_config
from datasets import Dataset
from omegaconf import OmegaConf, open_dict

from citrus.data import quickstart
from citrus.models import load_model, load_tokenizer
from citrus.train import losses, rewards
from citrus.train.data import Collator
from citrus.train.losses import IGNORE
from citrus.train.objectives import OBJECTIVES, forward
from citrus.train.rollout import batch_seed, completion_batch, completion_example

TOL = 1e-6
G = 4  # completions per prompt
CHUNK = 29  # tokens per chunk of citrus's output head: several per row


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_config("train", ["algorithm=grpo", "data=quickstart_rl"])
    return cfg, load_tokenizer(cfg.model)


PROMPT_LENGTHS = (17, 29)  # unequal: TRL left-pads the shorter prompt, citrus right-pads rows


def rollout_batch(tokenizer, max_new, seed=0):
    """Two prompts of different lengths, G completions each of varied lengths up to max_new, the
    last token an end-of-turn where the completion stopped."""
    g = torch.Generator().manual_seed(seed)
    vocab, eos = tokenizer.vocab_size, tokenizer.eos_token_id
    prompts = [torch.randint(5, vocab, (n,), generator=g).tolist() for n in PROMPT_LENGTHS]
    completions = []
    for i in range(2 * G):
        n = int(torch.randint(3, max_new, (1,), generator=g))
        ids = torch.randint(5, vocab, (n,), generator=g).tolist()
        completions.append(ids + [eos] if i % 3 else ids)  # every third one truncated
    return prompts, completions


def trl_rollout(prompts, completions):
    """A TRL rollout_func that 'samples' these completions: TRL then pads the prompts (left) and
    the completions (right), scores the old policy and the reference, and turns the rewards into
    advantages itself. Each example's prompt text is its prompt's index."""

    def rollout(texts, trainer):
        ids = [prompts[int(t)] for t in texts]
        return {"prompt_ids": ids, "completion_ids": completions, "logprobs": None}

    return rollout


def given_reward(completions, reward, **kwargs):  # the example's "reward" column
    return reward


def citrus_batch(prompts, completions, pad, advantages, temperature, drop):
    """The rollout's micro-batch of these completions; drop: as the rollout does without a KL
    term and on-policy, the zero-advantage ones are counted and left out."""
    rows = [completion_example(prompts[i // G], c, masked=False) for i, c in enumerate(completions)]
    beta = 0.0 if drop else 0.04
    algo = OmegaConf.create({"beta": beta, "num_iterations": 1, "temperature": temperature})
    return completion_batch(rows, advantages, algo, Collator(pad))


def completion_logps(logps, prompts, completions):
    """citrus's (rows, T - 1) next-token log-probs laid out as TRL's (rows, longest completion),
    0 past each completion as TRL's: row i's completion starts after its own prompt."""
    out = torch.zeros(len(completions), max(map(len, completions)))
    for i, c in enumerate(completions):
        start = len(prompts[i // G]) - 1  # the log-prob of token t sits at t - 1
        out[i, : len(c)] = logps[i, start : start + len(c)]
    return out


def same_logps(ours, trl, prompts, completions):
    """Each side's log-probs of the same tokens on its own layout agree, to float32 rounding: the
    left-padded rows sit at shifted positions in TRL's layout (no position ids), and RoPE sees
    only relative ones (measured: under 2e-6)."""
    diff = (completion_logps(ours, prompts, completions) - trl).abs().max()
    assert diff < 1e-5, diff


def masked_mean(x, mask):
    return float((x * mask).sum() / mask.sum())


def moved(model, scale, seed):
    other = copy.deepcopy(model)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return other


CASES = [  # loss_type, beta, temperature, old policy moved by, epsilon_high, KL ratio correction
    ("grpo", 0.0, 1.0, 0.0, None, True),
    ("grpo", 0.04, 0.7, 0.02, None, True),
    ("grpo", 0.04, 1.0, 0.02, None, False),
    ("dapo", 0.0, 1.0, 0.02, 0.28, True),
    ("dapo", 0.1, 0.9, 0.0, None, True),
    ("dr_grpo", 0.04, 1.0, 0.02, None, True),
]


@pytest.mark.parametrize("loss_type,beta,temperature,old_scale,eps_high,corrected", CASES)
def test_grpo_loss_matches_trl(
    tiny, tmp_path, monkeypatch, loss_type, beta, temperature, old_scale, eps_high, corrected
):
    """The loss and its gradient equal TRL GRPOTrainer._compute_loss's on the same rollout, each
    side laying it out (TRL left-pads prompts, citrus right-pads rows), scoring the old policy and
    the reference, and turning the rewards into advantages its own way: per sequence (grpo), per
    token (dapo), Dr. GRPO's constant; with and without the k3 KL; ratios away from 1, so the clip
    acts; at a sampling temperature other than 1."""
    from trl import GRPOConfig, GRPOTrainer

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL
    cfg, tokenizer = tiny
    max_new = 16
    torch.manual_seed(0)
    policy = load_model(cfg.model).to(torch.float32)
    theirs = copy.deepcopy(policy)
    prompts, completions = rollout_batch(tokenizer, max_new)
    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2 * G, num_generations=G,
        max_completion_length=max_new, beta=beta, loss_type=loss_type, epsilon=0.2,
        epsilon_high=eps_high, temperature=temperature, use_bias_correction_kl=corrected,
        # TRL scores the old policy only when it reuses a rollout (num_iterations > 1)
        num_iterations=2 if old_scale else 1,
        report_to=[], use_cpu=True, bf16=False,  # TRL's default bf16 autocasts on CPU too
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=theirs,
        reward_funcs=[given_reward],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["0", "1"]}),
        processing_class=tokenizer,
        rollout_func=trl_rollout(prompts, completions),
    )
    trainer.current_gradient_accumulation_steps = 1
    mode = "train" if theirs.training else "eval"

    drawn = torch.randn(2 * G, generator=torch.Generator().manual_seed(1))
    dropping = beta == 0.0 and not old_scale
    if dropping:  # a solved group (zero advantages): the rollout leaves it out of the batch
        drawn[G:] = 1.0
    reference = moved(policy, 0.03, seed=2)
    old_policy = moved(policy, old_scale, seed=3) if old_scale else policy

    # TRL: its rollout step, run while the policy still has the old weights (it scores the old
    # policy with its own model), then the loss after the "update" back to the policy's weights
    if beta:
        trainer.ref_model.load_state_dict(reference.state_dict())
    theirs.load_state_dict(old_policy.state_dict())
    examples = [{"prompt": str(i // G), "reward": float(r)} for i, r in enumerate(drawn)]
    inputs = trainer._generate_and_score_completions(examples)
    theirs.load_state_dict(policy.state_dict())
    pad_left = PROMPT_LENGTHS[1] - PROMPT_LENGTHS[0]
    assert inputs["prompt_mask"][:G, :pad_left].sum() == 0  # the short prompt is left-padded
    assert inputs["prompt_mask"][:G, pad_left:].all() and inputs["prompt_mask"][G:].all()
    assert ("old_per_token_logps" in inputs) == bool(old_scale)
    trl_loss = trainer._compute_loss(theirs, inputs)
    logged = trainer._metrics[mode]

    # citrus: its rollout's batch, advantages and log-probs
    advantages = losses.group_advantages(drawn, G)
    assert torch.allclose(inputs["advantages"], advantages, atol=1e-6)
    pad = tokenizer.pad_token_id
    batch = citrus_batch(prompts, completions, pad, advantages, temperature, dropping)
    assert batch["input_ids"].shape[0] == (G if dropping else 2 * G)
    algo = OmegaConf.merge(
        cfg.algorithm,
        {"loss_type": loss_type, "beta": beta, "temperature": temperature,
         "max_new_tokens": max_new, "epsilon_high": eps_high, "kl_ratio_correction": corrected},
    )  # fmt: skip
    ref_scorer = lambda b: forward(reference, b)  # noqa: E731
    scorer = lambda b: forward(policy, b, chunk_size=CHUNK)  # noqa: E731
    with torch.no_grad():
        if old_scale:
            batch["old_logps"] = forward(old_policy, batch)
            same_logps(batch["old_logps"], inputs["old_per_token_logps"], prompts, completions)
        if beta:
            same_logps(ref_scorer(batch), inputs["ref_per_token_logps"], prompts, completions)
    objective = OBJECTIVES["grpo"]
    loss, metrics = objective(scorer, batch, objective.counts([batch]), algo, ref_scorer)

    assert loss.item() == pytest.approx(trl_loss.item(), abs=TOL)
    loss.backward()
    trl_loss.backward()
    for (name, p), q in zip(policy.named_parameters(), theirs.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), name
    if old_scale:  # the clip decided somewhere, and TRL measured the same share
        assert metrics["clip_ratio"] > 0
        assert metrics["clip_ratio"] == pytest.approx(
            logged["clip_ratio/region_mean"][-1], abs=1e-6
        )
    if beta:  # citrus logs the k3 KL; TRL logs the one in its loss: times the ratio if corrected
        with torch.no_grad():
            logps = scorer(batch)
            kl = losses.k3_kl(logps, ref_scorer(batch))
            ratio = torch.exp(logps - batch.get("old_logps", logps))
        mask = batch["labels"][:, 1:] != IGNORE
        assert metrics["kl"] == pytest.approx(masked_mean(kl, mask), rel=1e-6)
        in_loss = kl * ratio if corrected else kl
        assert logged["kl"][-1] == pytest.approx(masked_mean(in_loss, mask), rel=1e-5)


def test_group_advantages_worked_example():
    """(r - group mean) / (group std + 1e-4), the std unbiased; batch and none scales."""
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    a = losses.group_advantages(r, 4)
    std = 0.5  # sample std of [1, 0, 0, 0]: sqrt((0.5625 + 3 x 0.0625) / 3)
    assert a[:4].tolist() == pytest.approx([0.75 / (std + 1e-4)] + [-0.25 / (std + 1e-4)] * 3)
    assert a[4:].tolist() == [0.0] * 4  # a solved group teaches nothing
    alike = torch.full((6,), 1.2)  # 1.2 x 6 / 6 is not 1.2 in float32: still exactly 0
    assert losses.group_advantages(alike, 6).tolist() == [0.0] * 6
    assert losses.group_advantages(r, 4, "none").tolist() == pytest.approx(
        [0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]
    )
    batch_std = float(torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1]).std())
    assert losses.group_advantages(r, 4, "batch")[0] == pytest.approx(0.75 / (batch_std + 1e-4))
    with pytest.raises(ValueError, match="scale_rewards"):
        losses.group_advantages(r, 4, "rank")


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    logps = torch.tensor([-1.0, -2.0, -0.5])
    assert losses.k3_kl(logps, logps).tolist() == [0.0, 0.0, 0.0]
    ref = torch.tensor([-1.5, -1.0, -0.5])
    # exp(r) - r - 1 at r = -0.5 and r = 1
    expected = [0.6065306597 + 0.5 - 1, 2.718281828 - 1 - 1, 0.0]
    assert losses.k3_kl(logps, ref).tolist() == pytest.approx(expected)


def completion(text, record, tokens=10, truncated=False):
    return rewards.Completion(text, tokens, truncated, record)


def mc_record(n_options=4, answer="B", question="Which drug?"):
    letters = "ABCDEFGHIJ"[:n_options]
    q = {"id": "q1", "benchmark": "t", "question": question, "answer": answer,
         "options": {x: f"option {x.lower()} text" for x in letters}}  # fmt: skip
    return {"id": "q1", "messages": [{"role": "user", "content": "ask"}], "question": q}


def ctx(**reward):
    cfg = compose_config("train", ["algorithm=grpo"]).reward
    with open_dict(cfg):
        cfg.merge_with(reward)
    return rewards.RewardContext(cfg, max_new_tokens=100)


def test_letter_reward_reads_through_the_ladder():
    """The gold letter scores 1 however it is written (a tag, a phrase, Chinese, a ten-option
    question's J); a wrong letter, two letters or none score 0."""
    four, ten = mc_record(), mc_record(10, "J")
    cases = [
        ("<think>x</think><answer>B. option b text</answer>", four, 1.0),
        ("The answer is (B).", four, 1.0),
        ("答案是B", four, 1.0),
        ("<think>...</think><answer>C</answer>", four, 0.0),
        ("B or D", four, 0.0),
        ("I cannot tell.", four, 0.0),
        ("<answer>J</answer>", ten, 1.0),
        ("<answer>A</answer>", ten, 0.0),
    ]
    got = rewards.REWARDS["letter"]([completion(t, r) for t, r, _ in cases], ctx())
    assert got == [want for _, _, want in cases]


def test_format_reward_wants_think_then_answer():
    texts = {
        "<think>findings</think>\n<answer>B</answer>": 1.0,
        "  <think>a\nb</think><answer> B </answer>\n": 1.0,
        "<answer>B</answer><think>late</think>": 0.0,  # out of order
        "<think></think><answer>B</answer>": 0.0,  # empty reasoning
        "<think>x</think><answer>B</answer> and more": 0.0,  # trailing text
        "<think>x</think>": 0.0,
        "B": 0.0,
    }
    got = rewards.REWARDS["format"]([completion(t, mc_record()) for t in texts], ctx())
    assert got == list(texts.values())


def test_length_reward_is_dapos_soft_overlong_punishment():
    """0 up to max - cache tokens, linear to -1 at max, -1 for a truncated completion."""
    c = ctx(length_cache=20)  # max_new_tokens 100: the ramp is 80..100
    lengths = [10, 80, 90, 99, 100]
    got = rewards.REWARDS["length"]([completion("x", {}, n) for n in lengths], c)
    assert got == pytest.approx([0.0, 0.0, -0.5, -0.95, -1.0])
    assert rewards.REWARDS["length"]([completion("x", {}, 50, truncated=True)], c) == [-1.0]


def test_weighted_sum_and_bad_config():
    c = ctx(weights={"letter": 1.0, "format": 0.5})
    got = rewards.score([completion("<think>x</think><answer>B</answer>", mc_record())], c)
    assert got == {"letter": [1.0], "format": [1.0], "reward": [1.5]}
    from citrus.errors import ConfigError

    with pytest.raises(ConfigError, match="reward.weights"):
        rewards.check_rewards(OmegaConf.create({"weights": {"exact": 1.0}, "extractor": "ladder"}))
    with pytest.raises(Exception, match="needs a multiple-choice 'question'"):
        rewards.REWARDS["letter"]([completion("B", {"id": "open1", "reference": "x"})], ctx())


def test_judge_reward_asks_the_judge_role_over_http(tmp_path):
    """The judge role behind a real OpenAI-compatible server on 127.0.0.1 sees the question as
    asked, the reference answer and the completion; its <score> becomes the reward / 100, an
    unreadable verdict 0."""
    from chat_server import ChatServer

    from citrus.synthesis.common import RoleEngines

    class Grader:  # the judge's verdicts, by what the request holds
        stats = {}

        def generate(self, conversations, on_batch=None, seeds=None):
            out = []
            for messages in conversations:
                text = messages[-1]["content"]
                if "Candidate's answer]\nbroken" in text:
                    out.append("I cannot grade this")
                elif "measles" in text.split("Candidate")[1]:
                    out.append("<score>90</score>")
                else:
                    out.append("<score>5</score>")
            return out

    with ChatServer(Grader()) as server:
        cfg = compose_config(
            "train",
            ["algorithm=grpo", "reward=judge", "role@roles.judge=openai",
             f"roles.judge.engine.base_url={server.url}", "roles.judge.engine.max_retries=0",
             f"roles.judge.engine.cache_path={tmp_path}/cache.jsonl"],
        )  # fmt: skip
        c = rewards.RewardContext(cfg.reward, 100, RoleEngines(cfg))
        record = {"id": "o1", "messages": [{"role": "user", "content": "Rash and Koplik spots?"}],
                  "reference": "measles"}  # fmt: skip
        texts = ["<think>spots</think><answer>measles</answer>", "<answer>rubella</answer>",
                 "broken"]  # fmt: skip
        got = rewards.REWARDS["judge"]([completion(t, record) for t in texts], c)
        asked = server.bodies[0]["messages"][-1]["content"]
    assert got == [0.9, 0.05, 0.0]
    assert "Rash and Koplik spots?" in asked and "[Reference answer]\nmeasles" in asked


def test_batch_seeds_differ_by_micro_batch_and_run_seed():
    seeds = {batch_seed(s, i) for s in (0, 1234) for i in range(200)}
    assert len(seeds) == 400 and all(0 <= s < 2**31 for s in seeds)
    assert batch_seed(1234, 7) == batch_seed(1234, 7)


def test_hf_sample_ids_are_reproducible_and_stop_at_eos(tiny):
    """The policy samples token ids: the same seed the same ids, another seed others; each
    completion ends at its first stop token or at max_new_tokens; the global RNG is untouched."""
    from citrus.engines.hf import HFEngine

    cfg, tokenizer = tiny
    model = load_model(cfg.model)
    settings = OmegaConf.merge(cfg.engine, {"temperature": 1.0, "max_new_tokens": 12})
    engine = HFEngine.around(settings, model, tokenizer, torch.device("cpu"))
    q = quickstart.generate("train", 3, seed=0)
    prompts = [tokenizer.apply_chat_template(quickstart.to_prompt_record(x, "quickstart")
               ["messages"], add_generation_prompt=True, tokenize=False) for x in q]  # fmt: skip
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    before = torch.get_rng_state()
    a = engine.sample_ids(ids, 4, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert a == engine.sample_ids(ids, 4, seed=5)
    assert a != engine.sample_ids(ids, 4, seed=6)
    assert [len(group) for group in a] == [4, 4, 4]
    for group in a:
        for c in group:
            assert 1 <= len(c) <= 12
            stops = [i for i, t in enumerate(c) if t in engine.eos_ids]
            assert stops in ([], [len(c) - 1])


def test_completion_example_labels_only_the_completion():
    row = completion_example([1, 2, 3], [7, 8, 2], masked=False)
    assert row == {"input_ids": [1, 2, 3, 7, 8, 2], "labels": [IGNORE] * 3 + [7, 8, 2]}
    assert completion_example([1, 2], [7], masked=True)["labels"] == [IGNORE] * 3


def grpo_run(run_dir, policy, *overrides):
    from conftest import GRPO_SMOKE, train_run

    args = ["experiment=quickstart", "logger=none", *GRPO_SMOKE, f"model.path={policy}",
            "data.quickstart.n_train=48", "trainer.micro_batch_size=4", "trainer.log_every=1",
            "trainer.checkpoint_every=0", *overrides]  # fmt: skip
    return train_run(run_dir, args)


def test_grpo_trains_from_its_own_rollouts_and_logs_them(answering_policy, tmp_path):
    """Every step logs the rollout (reward and its component, pass rate, groups, lengths, speed)
    and the update (loss, clip share, KL); the policy moves; metrics.json keeps the rewards.
    With num_iterations 2 the second step reuses the first's rollouts, scored by the policy that
    sampled them: the ratio leaves 1, the clip and the drift show it."""
    from conftest import exported, log_rows

    from citrus.train.rollout import Rollouts  # noqa: F401  (the module under test)

    metrics = grpo_run(tmp_path, answering_policy, "trainer.max_steps=4", "algorithm.beta=0.04",
                       "algorithm.num_iterations=2", "algorithm.epsilon=0.01")  # fmt: skip
    rows = log_rows(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    fresh, reused = rows[0], rows[1]
    for key in ("reward", "reward_std", "rewards/letter", "pass_rate", "groups/zero_std",
                "groups/all_pass", "groups/none_pass", "completions/mean_length",
                "completions/truncated", "rollout/tokens_per_s"):  # fmt: skip
        assert f"train/{key}" in fresh, key
        assert f"train/{key}" not in reused  # no new rollout at step 2
    assert fresh["train/reward_std"] > 0 and 0 <= fresh["train/pass_rate"] <= 1
    assert fresh["train/kl"] == 0.0 and fresh["train/clip_ratio"] == 0.0  # policy == reference
    assert reused["train/kl"] > 0 and reused["train/clip_ratio"] > 0
    assert reused["train/policy_drift"] != 0.0
    before, after = load_model_weights(answering_policy), exported(tmp_path)
    assert any(not torch.equal(before[k], after[k]) for k in after)
    assert "train/reward" in metrics and "train/pass_rate" in metrics
    sampled = [json.loads(x) for x in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert [r["step"] for r in sampled] == [1] * 16 + [3] * 16  # 4 prompts x 4, every 2 steps
    assert {r["letter"] for r in sampled} == {0.0, 1.0} and all(r["tokens"] <= 24 for r in sampled)
    first = sampled[:4]  # one group: the advantages are its rewards, normalized
    assert sum(r["advantage"] for r in first) == pytest.approx(0.0, abs=1e-5)


def load_model_weights(model_dir):
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def test_grpo_sigkill_then_resume_gives_the_same_weights(answering_policy, tmp_path):
    """Killed at a random step, resumed from its newest checkpoint: the same rollouts (their
    seeds follow the micro-batch), the same updates, the same weights as a run never killed."""
    from conftest import GRPO_SMOKE, run_cli
    from test_reliability import TRAIN, assert_same_run, kill_and_resume

    extra = (*GRPO_SMOKE, f"model.path={answering_policy}")
    reference = tmp_path / "reference"
    done = run_cli("train", *TRAIN, *extra, f"hydra.run.dir={reference}")
    assert done.returncode == 0, done.stderr[-3000:]
    kill_and_resume(extra, random.Random("grpo-kill").randint(2, 10), tmp_path / "run")
    assert_same_run(tmp_path / "run", reference)
    # the resumed run sampled what the uninterrupted one did, each step's completions once
    assert (tmp_path / "run" / "rollouts.jsonl").read_text() == (
        reference / "rollouts.jsonl"
    ).read_text()


def test_pipeline_runs_grpo_after_sft(tmp_path):
    """pipeline.stages=[sft, rl]: the rl stage trains GRPO from the SFT export on pipeline.rl's
    prompts with pipeline.rl's reward, is evaluated, logged once in stages.jsonl and gets its
    column in the final table; its model card names the algorithm and the SFT model."""
    from conftest import SMOKE, run_cli

    run_dir = tmp_path / "run"
    result = run_cli(
        "pipeline", *SMOKE, "pipeline.stages=[sft,rl]", "pipeline.rl.reward=letter_format",
        "+pipeline.rl.data_params.quickstart={n_train: 16}",
        "+pipeline.rl.algorithm_params.max_new_tokens=64",  # letter_format's length_cache
        "+pipeline.rl.algorithm_params.num_generations=2",
        "+pipeline.rl.trainer={max_steps: 2, micro_batch_size: 2, lr: 1.0e-5}",
        f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stages = [json.loads(x)["stage"] for x in (run_dir / "stages.jsonl").read_text().splitlines()]
    assert stages == ["prepare", "evaluate_base", "sft", "evaluate_sft", "rl", "evaluate_rl"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["rl/steps"] == 2 and "rl/mean_accuracy" in metrics
    assert {"rl/rewards/letter", "rl/rewards/format", "rl/rewards/length"} <= metrics.keys()
    rows = [json.loads(x) for x in (run_dir / "rl" / "train_log.jsonl").read_text().splitlines()]
    assert rows[0]["rl/completions/max_length"] <= 64
    assert "after GRPO" in result.stdout + result.stderr  # its column in the table
    card = (run_dir / "rl" / "model" / "README.md").read_text()
    assert "grpo" in card and str(run_dir / "sft" / "model") in card
    assert "letter_format" in card  # the reward it was trained on
    from citrus.report import find_runs, report_panels

    panels = report_panels(find_runs([run_dir]))
    assert {"kind": "line", "title": "rl: rollout reward", "x": "rl/step",
            "y": ["rl/reward", "rl/pass_rate"]} in panels  # fmt: skip
    assert (run_dir / "rewards.png").stat().st_size > 0
