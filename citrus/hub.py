"""`citrus push` and `citrus download`: models to and from the Hugging Face hub (or the mirror
HF_ENDPOINT names).

    citrus push hub.run=outputs/pipeline/<date>/<time> hub.repo_id=me/citrus-quickstart
    citrus download model=llama-3.1-70b-instruct    # once per node, before the training job

push uploads a run's newest export (or hub.stage's) with its model card; download fetches a hub
model's files into the hub cache every loader reads (HF_HOME / HF_HUB_CACHE; on a cluster, a
node-local or shared disk), under a lock, so a node's processes fetch it once. The token comes
from the environment variable hub.token_env and is never written anywhere.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from citrus.errors import CitrusError, ConfigError, MissingFileError
from citrus.models import card
from citrus.result import JobResult

log = logging.getLogger(__name__)


class HubError(CitrusError, ConnectionError):
    """The hub cannot be reached, refuses the request, or is switched off (HF_HUB_OFFLINE)."""


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_failures() -> tuple[type[BaseException], ...]:
    """What a call to the hub raises when it cannot be reached or refuses: OSError (the hub's
    own errors, offline mode) and the HTTP client's transport errors."""
    from huggingface_hub import errors

    http = getattr(errors, "HTTPError", None)  # huggingface_hub 2 re-exports its client's
    if http is None:
        import httpx

        http = httpx.HTTPError
    return (OSError, http)


def check_online(action: str) -> None:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise HubError(f"{action}: HF_HUB_OFFLINE is set, the hub is switched off")


def model_to_push(source: Path, stage: str | None) -> Path:
    """A model directory as given, or a run directory's export: hub.stage's (`sft`, `preference`),
    else the last one its run.json lists."""
    if (source / "config.json").is_file() and stage is None:
        return source
    record_path = source / "run.json"
    if not record_path.is_file():
        raise MissingFileError(f"hub.run={source}: neither a model directory nor a run directory")
    outputs = json.loads(record_path.read_text()).get("outputs", {})
    models = {k.removesuffix("/model") or "model": Path(v) for k, v in outputs.items()
              if k == "model" or k.endswith("/model")}  # fmt: skip
    if not models:
        raise MissingFileError(f"hub.run={source}: its run.json lists no exported model")
    if stage is None:
        return list(models.values())[-1]
    if stage not in models:
        raise ConfigError(f"hub.stage={stage!r}: {source} exported {sorted(models)}")
    return models[stage]


def push(cfg: Any, run: Any) -> JobResult:
    hub = cfg.hub
    if not hub.run or not hub.repo_id:
        raise ConfigError("citrus push needs hub.run=<run or model dir> and hub.repo_id=owner/name")
    model_dir = model_to_push(Path(hub.run), hub.stage)
    facts = card.read(model_dir)
    if facts is None:
        raise MissingFileError(
            f"{model_dir}: no citrus model card ({card.CARD}); exports of this version of citrus "
            "carry one (re-export, or write one before pushing)"
        )
    check_online(f"push {model_dir} to {hub.repo_id}")
    from huggingface_hub import HfApi

    api = HfApi(token=os.environ.get(hub.token_env) or None)
    try:
        api.create_repo(hub.repo_id, private=hub.private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(model_dir),
            repo_id=hub.repo_id,
            commit_message=f"citrus {facts['citrus']['stage']}: {facts['citrus']['command']}",
        )
    except hub_failures() as e:
        raise HubError(
            f"push {model_dir} to {hub.repo_id} at {endpoint()}: {type(e).__name__}: {e} "
            f"(the token is read from ${hub.token_env})"
        ) from None
    log.info("pushed %s to %s", model_dir, commit.commit_url)
    return JobResult({"repo_id": hub.repo_id, "commit": commit.oid, "url": commit.commit_url})


def download(cfg: Any, run: Any) -> JobResult:
    """model.path's files into the hub cache; the node's other processes wait on the lock and
    find them there."""
    from filelock import FileLock
    from huggingface_hub import constants, snapshot_download

    from citrus.models import is_local

    repo = str(cfg.model.path)
    if is_local(repo):
        return JobResult({"model_dir": repo}, {"model": Path(repo)})  # local: nothing to fetch
    cache = Path(constants.HF_HUB_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    token = os.environ.get(cfg.hub.token_env) or None
    args = {"repo_id": repo, "revision": cfg.hub.revision, "token": token}
    with FileLock(str(cache / f".citrus-{repo.replace('/', '--')}.lock")):
        try:  # on the node already: no request at all
            path = snapshot_download(**args, local_files_only=True)
            log.info("%s is in the cache: %s", repo, path)
        except hub_failures():
            check_online(f"model.path={repo} is not in the hub cache {cache}")
            try:
                path = snapshot_download(**args)
            except hub_failures() as e:
                raise HubError(
                    f"model.path={repo}: not in the hub cache {cache}, and {endpoint()} cannot "
                    f"give it ({type(e).__name__}: {e}); run `citrus download model=...` where "
                    "the hub is reachable and share HF_HUB_CACHE, or set model.path to a local "
                    "directory"
                ) from None
            log.info("downloaded %s into %s", repo, path)
    return JobResult({"model_dir": str(path)}, {"model": Path(path)})
