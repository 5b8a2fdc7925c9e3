"""The one seam to the Hugging Face hub: a repository's files and sizes at a revision, and small JSON files.

Everything goes through the real `huggingface_hub` client, imported inside the calls (`fleet --help` and
`fleet validate` must not pay for it). The endpoint and the token are the ones users already set:
`HF_ENDPOINT` (read when a Hub is made, so a test can point it at a local server) and `HF_TOKEN` or
`hf auth login`. The client's exceptions are translated here, at the boundary, into fleet errors:

    HubError (a FleetError)
    ├── HubGated        the repository is gated and no token, or a token without access, was sent
    ├── HubNotFound     no such repository, revision or file
    └── HubUnreachable  the hub did not answer (network, DNS, timeout, 5xx)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FleetError

DEFAULT_ENDPOINT = "https://huggingface.co"
METADATA_TIMEOUT_S = 30.0
MAX_JSON_BYTES = 16 * 1024 * 1024  # a config or an index is kilobytes; anything bigger is not what we asked for


class HubError(FleetError):
    pass


class HubGated(HubError):
    pass


class HubNotFound(HubError):
    pass


class HubUnreachable(HubError):
    pass


@dataclass(frozen=True)
class RepoFiles:
    """A repository at one commit: every file with its size in bytes."""

    repo_id: str
    revision: str  # as asked (a branch, a tag or a commit)
    commit: str  # the 40-character commit it named
    sizes: dict[str, int] = field(compare=False)
    gated: bool = False


class Hub:
    """The hub as fleet uses it. `endpoint` defaults to HF_ENDPOINT, then huggingface.co; `token` to the
    client's own lookup (HF_TOKEN, then the token file of `hf auth login`). `cache_dir` is the HF cache the
    small JSON files land in (the client's default when None)."""

    def __init__(self, endpoint: str | None = None, token: str | None = None, cache_dir: Path | None = None) -> None:
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self._token = token
        self.cache_dir = cache_dir

    def has_token(self) -> bool:
        if self._token:
            return True
        from huggingface_hub import get_token

        return get_token() is not None

    def files_at(self, repo_id: str, revision: str) -> RepoFiles:
        """The commit `revision` names and the size of every file there (one API call)."""
        from huggingface_hub import HfApi

        api = HfApi(endpoint=self.endpoint, token=self._token)
        with self._translated(repo_id, revision):
            info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=METADATA_TIMEOUT_S)
        if not info.sha or info.siblings is None:
            raise HubError(f"{repo_id}: the hub at {self.endpoint} answered without a commit or a file list")
        sizes = {s.rfilename: _size_of(s) for s in info.siblings}
        return RepoFiles(repo_id, revision, info.sha, sizes, gated=bool(info.gated))

    def read_json(self, repo_id: str, filename: str, commit: str) -> Any:
        """A small JSON file of the repository at `commit` (config.json, an index), parsed."""
        from huggingface_hub import hf_hub_download

        with self._translated(repo_id, commit, filename):
            path = hf_hub_download(
                repo_id,
                filename,
                revision=commit,
                endpoint=self.endpoint,
                token=self._token,
                cache_dir=self.cache_dir,
                etag_timeout=METADATA_TIMEOUT_S,
            )
        if Path(path).stat().st_size > MAX_JSON_BYTES:
            raise HubError(f"{repo_id}: {filename} is over {MAX_JSON_BYTES // 2**20} MiB: not a config or an index")
        try:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HubError(f"{repo_id}: {filename} at {commit[:12]} is not valid JSON ({exc})") from None

    def _translated(self, repo_id: str, revision: str, filename: str | None = None) -> _Translated:
        return _Translated(self, repo_id, revision, filename)


class _Translated:
    """Turns the client's exceptions into one-line fleet errors that say what to do."""

    def __init__(self, hub: Hub, repo_id: str, revision: str, filename: str | None) -> None:
        self.hub, self.repo_id, self.revision, self.filename = hub, repo_id, revision, filename

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        translated = self._translate(exc)
        if translated is None:
            return False
        raise translated from None

    def _translate(self, exc: Exception) -> HubError | None:
        from huggingface_hub import errors

        repo, where = self.repo_id, self.hub.endpoint
        if isinstance(exc, errors.GatedRepoError):
            if not self.hub.has_token():
                return HubGated(f"{repo} is gated on the hub: set HF_TOKEN to a token that was granted access")
            return HubGated(f"{repo} is gated and your token has no access: request it at {where}/{repo}")
        if isinstance(exc, errors.RevisionNotFoundError):
            return HubNotFound(f"{repo} has no revision '{self.revision}' (check model.revision)")
        if isinstance(exc, errors.RepositoryNotFoundError):
            private = "" if self.hub.has_token() else "; a private repository needs HF_TOKEN"
            return HubNotFound(f"repository '{repo}' not found on {where} (check model.id{private})")
        if isinstance(exc, errors.RemoteEntryNotFoundError):
            return HubNotFound(f"{repo} has no file '{self.filename}' at {self.revision[:12]}")
        if isinstance(exc, errors.LocalEntryNotFoundError):  # hf_hub_download's "no connection" after retries
            return HubUnreachable(f"cannot reach the hub at {where} to read {repo}/{self.filename}")
        if isinstance(exc, errors.HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else "an error"
            if isinstance(status, int) and status >= 500:
                return HubUnreachable(f"the hub at {where} answered {status} for {repo}: try again later")
            return HubError(f"the hub at {where} answered {status} for {repo}")
        if _is_transport_error(exc):
            return HubUnreachable(f"cannot reach the hub at {where}: {exc or type(exc).__name__}")
        return None


def _is_transport_error(exc: Exception) -> bool:
    """The client's HTTP library (httpx, or its fork) raises TransportError for network failures."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TransportError", "TimeoutException", "NetworkError"}) or isinstance(exc, ConnectionError)


def _size_of(sibling: Any) -> int:
    if sibling.size is not None:
        return int(sibling.size)
    if sibling.lfs is not None:
        return int(sibling.lfs.size)
    return 0
