"""Tiny backbones built from config: no hub, no download, same classes as the real models.

`build_backbone` trains a byte-level BPE tokenizer on the quickstart corpus (with the family's
real special tokens and chat template), initialises a LlamaForCausalLM or Qwen2ForCausalLM from
the `build` section, and saves both with save_pretrained. From then on the directory loads
through AutoTokenizer / AutoModelForCausalLM like any hub checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from citrus.errors import ConfigError

BUILD_STAMP = "citrus_build.json"


@dataclass(frozen=True)
class ChatFamily:
    bos: str | None
    eos: str  # end of an assistant turn: generation stops here and SFT must learn it
    pad: str  # distinct from eos, so padding never masks the stop token
    extra: tuple[str, ...]
    chat_template: str


# Llama-3 header format: <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
LLAMA3 = ChatFamily(
    bos="<|begin_of_text|>",
    eos="<|eot_id|>",
    pad="<|finetune_right_pad_id|>",
    extra=("<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"),
    chat_template=(
        "{{ bos_token }}"
        "{% for m in messages %}"
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' "
        "+ m['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
)

# ChatML, as Qwen2.5 uses it: <|im_start|>role\ncontent<|im_end|>\n
CHATML = ChatFamily(
    bos=None,
    eos="<|im_end|>",
    pad="<|endoftext|>",
    extra=("<|im_start|>",),
    chat_template=(
        "{% for m in messages %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
)

FAMILIES = {"llama": LLAMA3, "qwen2": CHATML}


def _corpus(n_items: int) -> Iterator[str]:
    """Quickstart prompts and reasoning traces: the text these models will read and write."""
    from citrus.data import quickstart
    from citrus.prompts import build_messages

    for q in quickstart.generate("train", n_items, seed=0):
        for prompt in ("citrus_expert", "quickstart"):
            for m in build_messages(q, prompt):
                yield m["content"]
        yield q.metadata["reasoning"]
    for d in quickstart.DISEASES:  # every finding, including ones the sample may have missed
        yield " ".join((d.name, *d.symptoms, *d.signs, *d.labs))


def train_tokenizer(family: ChatFamily, vocab_size: int, corpus_items: int):
    from transformers import PreTrainedTokenizerFast

    specials = [t for t in (family.bos, family.eos, family.pad, *family.extra) if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte stays encodable
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(corpus_items), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=family.bos,
        eos_token=family.eos,
        pad_token=family.pad,
        additional_special_tokens=list(family.extra),
        chat_template=family.chat_template,
        model_max_length=1 << 20,
        padding_side="right",
    )


def init_model(build: Any, tokenizer) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    if build.architecture not in classes:
        raise ConfigError(
            f"model.build.architecture: unknown {build.architecture!r}; one of {sorted(classes)}"
        )
    config_cls, model_cls = classes[build.architecture]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=build.hidden_size,
        intermediate_size=build.intermediate_size,
        num_hidden_layers=build.num_hidden_layers,
        num_attention_heads=build.num_attention_heads,
        num_key_value_heads=build.num_key_value_heads,
        max_position_embeddings=build.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": build.rope_theta},
        tie_word_embeddings=build.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(build.init_seed)
    return model_cls(config)


@functools.cache
def _corpus_md5(n_items: int) -> str:
    return hashlib.md5("\x00".join(_corpus(n_items)).encode()).hexdigest()


def _stamp(family: str, build: Any) -> dict:
    """What a build depends on: its settings and the text its tokenizer is trained on."""
    return {
        "family": family,
        **dict(build),
        "corpus_md5": _corpus_md5(build.tokenizer_corpus_items),
    }


def check_build(path: Path, family: str, build: Any) -> None:
    """A cached build made from other settings is stale: refuse it rather than train on it.
    (A directory without a stamp, such as an exported fine-tuned model, is used as it is.)"""
    stamp_file = path / BUILD_STAMP
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) != _stamp(family, build):
        raise FileExistsError(
            f"{path} holds a tiny backbone built from other settings or another version of its "
            f"tokenizer corpus (see {stamp_file}); delete {path} to rebuild it, "
            "or set model.path elsewhere"
        )


def build_backbone(path: str | os.PathLike, family: str, build: Any) -> Path:
    """Build the tokenizer and model into `path`.

    The directory is written beside its final place and renamed in, so concurrent jobs of a
    multirun never load a half-written backbone."""
    path = Path(path)
    stamp = _stamp(family, build)
    if family not in FAMILIES:
        raise ConfigError(
            f"model.family: unknown {family!r} for a built model; one of {sorted(FAMILIES)}"
        )
    tokenizer = train_tokenizer(FAMILIES[family], build.vocab_size, build.tokenizer_corpus_items)
    model = init_model(build, tokenizer)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp)
    (tmp / BUILD_STAMP).write_text(json.dumps(stamp, indent=2))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished first (keep theirs), or the path is taken
        shutil.rmtree(tmp, ignore_errors=True)
        if not (path / BUILD_STAMP).is_file():
            raise FileExistsError(
                f"{path} exists and is not a tiny backbone; set model.path elsewhere"
            ) from None
    return path
