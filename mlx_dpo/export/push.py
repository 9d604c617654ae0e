"""Push an exported folder to the Hugging Face Hub: create the repo if needed, then one new commit.

The token comes from where huggingface_hub keeps it (HF_TOKEN, or `hf auth login`'s saved token).
It is passed to the client only: never printed, logged or written anywhere, and scrubbed from any
error text that might echo it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from mlx_dpo.errors import MlxDpoError
from mlx_dpo.names import is_repo_id

# Hidden files (.DS_Store, editor swap files, atomic-write leftovers) are not part of a model folder.
IGNORE_PATTERNS = [".*", "**/.*"]


def folder_files(folder: Path) -> list[Path]:
    """The files a push uploads: every file under `folder` except hidden ones."""
    return [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def push_folder(folder: str | Path, repo: str, *, private: bool = False, message: str | None = None) -> str:
    """Upload every file of `folder` to the model repo `repo` as a new commit; returns the commit URL.

    Files already in the repo and not in the folder are left alone (no deletions).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MlxDpoError(f"{folder}: no such folder")
    if not folder_files(folder):
        raise MlxDpoError(f"{folder}: folder is empty; nothing to push")
    if not is_repo_id(repo):
        raise MlxDpoError(f"--repo {repo}: expected OWNER/NAME")

    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise MlxDpoError("HF_HUB_OFFLINE is set: pushing needs the network (unset it, or set HF_HUB_OFFLINE=0)")
    token = get_token()
    if not token:
        raise MlxDpoError("no Hugging Face token: run `hf auth login` or set HF_TOKEN")
    api = HfApi(token=token)
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo,
            folder_path=folder,
            commit_message=message or f"Upload {folder.name} with mlx-dpo",
            ignore_patterns=list(IGNORE_PATTERNS),
        )
    except Exception as e:  # huggingface_hub and its HTTP client raise many types: map them to one line
        raise MlxDpoError(_explain(e, repo, constants.ENDPOINT).replace(token, "***")) from None
    return str(getattr(info, "commit_url", None) or f"{constants.ENDPOINT}/{repo}")


def _explain(error: Exception, repo: str, endpoint: str) -> str:
    """One line saying what went wrong with a push and what to do about it."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    if isinstance(error, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set: pushing needs the network (unset it, or set HF_HUB_OFFLINE=0)"
    if isinstance(error, HfHubHTTPError):
        status = getattr(error.response, "status_code", None)
        if status in (401, 403):
            return (
                f"no permission to write to {repo} (HTTP {status}): check that your token has write access "
                "to it (`hf auth login`, or set HF_TOKEN)"
            )
        if isinstance(error, RepositoryNotFoundError) or status == 404:
            return f"{repo}: repo not found, or your token cannot see it (HTTP {status})"
        detail = (getattr(error, "server_message", None) or str(error)).splitlines()[0] if str(error) else ""
        return f"push to {repo} failed (HTTP {status}): {detail}"
    if _is_network_error(error):
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"cannot reach the Hugging Face Hub at {endpoint} ({reason}); check your network"
    return f"push to {repo} failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"


def _is_network_error(error: BaseException) -> bool:
    kinds: list[type] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):  # huggingface_hub 2.x uses httpx2, 1.x httpx
        try:
            kinds.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            pass
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:  # the transport error may sit under a wrapper
        if isinstance(e, tuple(kinds)):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False
