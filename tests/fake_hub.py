"""A local fake of the Hugging Face hub's HTTP API, for tests and benchmarks.

The real ``huggingface_hub`` client talks to it as it talks to huggingface.co: point it here with
``HF_ENDPOINT=http://127.0.0.1:<port>`` (or ``endpoint=fake.url``). Nothing in ``huggingface_hub`` is mocked.
It answers what the client's ``model_info``, ``list_repo_tree``, ``hf_hub_download`` and ``snapshot_download``
send (read from huggingface_hub 2.4: ``hf_api.py``, ``file_download.py``, ``utils/_http.py``):

- ``GET /api/models/{repo}[/revision/{rev}]``: id, sha (the commit the revision names), gated, siblings; with
  ``?blobs=true`` (``files_metadata=True``) each sibling has its size, blobId and, for LFS files, ``lfs``.
- ``GET /api/models/{repo}/tree/{rev}[?recursive=true]``: files and folders, as the client's ``RepoFile``
  reads them.
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: small files answer 200 with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length``; LFS files answer 302 to a "CDN" on another origin (``localhost`` instead of
  ``127.0.0.1``, so the client neither follows the HEAD redirect nor sends its token there) with
  ``X-Linked-Size`` and ``X-Linked-Etag``, the way the hub redirects to its CDN.
- Failures as the hub sends them: a gated repository's files answer 401 (no token) or 403 (a token without
  access) with ``X-Error-Code: GatedRepo``; its metadata stays public, as on the hub. A missing repository is
  ``X-Error-Code: RepoNotFound`` (401 without a token, 404 with one), a missing revision
  ``RevisionNotFound`` (404), a missing file ``EntryNotFound`` (404).

Every request is recorded in ``fake.requests`` (method, path) and the body bytes served per repository in
``fake.bytes_served``. Weight files are declared by size and generated on the fly, so a test can shape a
repository like a real one (shards, an index, ``original/``, both formats) without storing gigabytes.

Usage::

    with FakeHub() as hub:
        hub.add_repo("Org/Model", {"config.json": b"{...}", "model.safetensors": 4096})
        HfApi(endpoint=hub.url).model_info("Org/Model", files_metadata=True)
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

GENERATED_CHUNK = 1 << 16
TOKEN_WITH_ACCESS = "hf_test_access"  # a token that may read every gated repository of the fake
TOKEN_WITHOUT_ACCESS = "hf_test_noaccess"  # a valid token that was never granted a gated repository


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes | int]  # path -> content, or a size for a generated (LFS) file


@dataclass
class FakeRepo:
    repo_id: str
    gated: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit sha
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        sha = self.refs.get(revision, revision)
        return self.commits.get(sha)


def is_lfs(content: bytes | int) -> bool:
    return isinstance(content, int)


def file_size(content: bytes | int) -> int:
    return content if isinstance(content, int) else len(content)


def generated_bytes(seed: str, start: int, end: int) -> bytes:
    """Deterministic bytes [start, end) of a generated file (the same file reads the same twice)."""
    block = hashlib.sha256(seed.encode()).digest() * (GENERATED_CHUNK // 32)
    out = bytearray()
    position = start
    while position < end:
        offset = position % len(block)
        piece = block[offset : offset + (end - position)]
        out += piece
        position += len(piece)
    return bytes(out)


def blob_id(repo_id: str, path: str, content: bytes | int) -> str:
    material = content if isinstance(content, bytes) else f"{repo_id}/{path}/{content}".encode()
    return hashlib.sha1(material).hexdigest()


def lfs_sha256(repo_id: str, path: str, content: int) -> str:
    return hashlib.sha256(f"{repo_id}/{path}/{content}".encode()).hexdigest()


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.bytes_served: Counter[str] = Counter()
        self.downloads: list[tuple[str, str]] = []  # (repo, path) of every whole-file GET
        self.range_reads: list[tuple[str, str]] = []  # (repo, path) of every ranged GET (e.g. a safetensors header)
        self.down = False  # True: every request is answered 503 (a hub that is there but failing)
        self.latency_s = 0.0  # added to every request: a hub across the internet, not on this machine
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- setup -----------------------------------------------------------------------------------------

    def add_repo(
        self, repo_id: str, files: dict[str, bytes | int], *, gated: bool = False, branch: str = "main"
    ) -> str:
        """A repository with one commit on `branch`; returns the commit sha."""
        repo = self.repos.setdefault(repo_id, FakeRepo(repo_id, gated=gated))
        repo.gated = gated
        return self.push(repo_id, files, branch=branch)

    def push(self, repo_id: str, files: dict[str, bytes | int], *, branch: str = "main") -> str:
        """A new commit on `branch` holding exactly `files`; returns its sha."""
        repo = self.repos[repo_id]
        sha = hashlib.sha1(f"{repo_id}@{len(repo.commits)}:{sorted(files)}".encode()).hexdigest()
        repo.commits[sha] = Commit(sha, dict(files))
        repo.refs[branch] = sha
        return sha

    # --- server ----------------------------------------------------------------------------------------

    def __enter__(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None, "use FakeHub as a context manager"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_url(self) -> str:
        """Another origin for the same server: what the client must treat as a CDN."""
        return f"http://localhost:{self.port}"

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def served(self, repo_id: str, path: str, count: int, ranged: bool) -> None:
        with self._lock:
            self.bytes_served[repo_id] += count
            (self.range_reads if ranged else self.downloads).append((repo_id, path))

    def paths(self, method: str | None = None) -> list[str]:
        return [p for m, p in self.requests if method is None or m == method]


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # a parallel client opens many connections at once; the default backlog is 5
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet: tests read fake.requests instead
        pass

    def do_GET(self) -> None:
        self._dispatch(body=True)

    def do_HEAD(self) -> None:
        self._dispatch(body=False)

    # --- routing ---------------------------------------------------------------------------------------

    def _dispatch(self, body: bool) -> None:
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        self.hub.record(self.command, parts.path + (f"?{parts.query}" if parts.query else ""))
        if self.hub.latency_s:
            time.sleep(self.hub.latency_s)
        if self.hub.down:
            return self._error(503, "ServiceUnavailable", "the hub is down", body)
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path):
            return self._model_info(match[1], match[2] or "main", query, body)
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path):
            return self._tree(match[1], match[2], match[3] or "", query, body)
        if match := re.fullmatch(r"/cdn/([^/]+/[^/]+)/([0-9a-f]{40})/(.+)", path):
            return self._cdn(match[1], match[2], match[3], body)
        if match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(match[1], match[2], match[3], body)
        self._error(404, None, f"no route for {path}", body)

    def _token(self) -> str | None:
        header = self.headers.get("Authorization", "")
        return header.removeprefix("Bearer ").strip() or None

    def _repo(self, repo_id: str, body: bool) -> FakeRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            # The hub answers 401 to an anonymous request for a repository it cannot show (missing or private).
            status = 404 if self._token() else 401
            self._error(status, "RepoNotFound", "Repository not found", body)
        return repo

    def _commit(self, repo: FakeRepo, revision: str, body: bool) -> Commit | None:
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
        return commit

    def _may_read_files(self, repo: FakeRepo, body: bool) -> bool:
        if not repo.gated:
            return True
        token = self._token()
        if token == TOKEN_WITH_ACCESS:
            return True
        if token is None:
            message = f"Access to model {repo.repo_id} is restricted. You must have access to it and be authenticated."
            self._error(401, "GatedRepo", message, body)
        else:
            message = f"Access to model {repo.repo_id} is restricted and you are not in the authorized list."
            self._error(403, "GatedRepo", message, body)
        return False

    # --- endpoints -------------------------------------------------------------------------------------

    def _model_info(self, repo_id: str, revision: str, query: dict[str, list[str]], body: bool) -> None:
        repo = self._repo(repo_id, body)
        commit = repo and self._commit(repo, revision, body)
        if repo is None or commit is None:
            return
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, content in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling["size"] = file_size(content)
                sibling["blobId"] = blob_id(repo_id, path, content)
                if is_lfs(content):
                    sha = lfs_sha256(repo_id, path, file_size(content))
                    sibling["lfs"] = {"size": file_size(content), "sha256": sha, "pointerSize": 134}
            siblings.append(sibling)
        info = {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": commit.sha,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }
        self._json(200, info, body)

    def _tree(self, repo_id: str, revision: str, under: str, query: dict[str, list[str]], body: bool) -> None:
        repo = self._repo(repo_id, body)
        commit = repo and self._commit(repo, revision, body)
        if repo is None or commit is None:
            return
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{under.rstrip('/')}/" if under else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, content in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            folders = rest.split("/")[:-1]
            for depth in range(len(folders) if recursive else min(1, len(folders))):
                folder = prefix + "/".join(folders[: depth + 1])
                entries.setdefault(folder, {"type": "directory", "path": folder, "oid": blob_id(repo_id, folder, 0)})
            if recursive or not folders:
                entry: dict[str, Any] = {"type": "file", "path": path, "size": file_size(content)}
                entry["oid"] = blob_id(repo_id, path, content)
                if is_lfs(content):
                    sha = lfs_sha256(repo_id, path, file_size(content))
                    entry["lfs"] = {"oid": sha, "size": file_size(content), "pointerSize": 134}
                entries[path] = entry
        self._json(200, list(entries.values()), body)

    def _resolve(self, repo_id: str, revision: str, path: str, body: bool) -> None:
        repo = self._repo(repo_id, body)
        commit = repo and self._commit(repo, revision, body)
        if repo is None or commit is None or not self._may_read_files(repo, body):
            return
        content = commit.files.get(path)
        if content is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist", body, commit=commit.sha)
        etag = f'"{blob_id(repo_id, path, content)}"'
        if is_lfs(content):
            size = file_size(content)
            headers = {
                "Location": f"{self.hub.cdn_url}/cdn/{repo_id}/{commit.sha}/{path}",
                "X-Repo-Commit": commit.sha,
                "ETag": etag,
                "X-Linked-Etag": f'"{lfs_sha256(repo_id, path, size)}"',
                "X-Linked-Size": str(size),
                "Content-Length": "0",
            }
            return self._send(302, headers, b"", body)
        headers = {"X-Repo-Commit": commit.sha, "ETag": etag, "Content-Type": "application/octet-stream"}
        self._send_content(repo_id, path, content, headers, body)

    def _cdn(self, repo_id: str, sha: str, path: str, body: bool) -> None:
        repo = self.hub.repos.get(repo_id)
        commit = repo.commits.get(sha) if repo else None
        content = commit.files.get(path) if commit else None
        if content is None:
            return self._send(404, {"Content-Length": "0"}, b"", body)
        self._send_content(repo_id, path, content, {"Content-Type": "application/octet-stream"}, body)

    # --- responses -------------------------------------------------------------------------------------

    def _send_content(self, repo_id: str, path: str, content: bytes | int, headers: dict[str, str], body: bool) -> None:
        seed = f"{repo_id}/{path}"
        size = file_size(content)
        start, end, status = 0, size, 200
        if (ranged := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))) and size:
            start = min(int(ranged[1]), size)
            end = min(int(ranged[2]) + 1, size) if ranged[2] else size
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not body:
            return
        position = start
        while position < end:
            stop = min(position + GENERATED_CHUNK, end)
            chunk = content[position:stop] if isinstance(content, bytes) else generated_bytes(seed, position, stop)
            self.wfile.write(chunk)
            position = stop
        self.hub.served(repo_id, path, end - start, ranged=status == 206)

    def _json(self, status: int, data: Any, body: bool) -> None:
        payload = json.dumps(data).encode()
        self._send(status, {"Content-Type": "application/json", "Content-Length": str(len(payload))}, payload, body)

    def _error(self, status: int, code: str | None, message: str, body: bool, commit: str | None = None) -> None:
        payload = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(payload)), "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(status, headers, payload, body)

    def _send(self, status: int, headers: dict[str, str], payload: bytes, body: bool) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body and payload:
            self.wfile.write(payload)


# --- repositories shaped like real ones ------------------------------------------------------------------
# File names and sizes follow the public repositories of the shipped catalog as of 2026 (sizes approximate,
# from their hub pages; Qwen3.6-27B-FP8 is modelled on its Qwen3.5 siblings). A test or benchmark scales the
# weight files down (`scale`) so they can really be downloaded; JSON files stay real and full size.

GB = 10**9
MB = 10**6


def _shards(count: int, total: int, stem: str = "model", suffix: str = "safetensors") -> dict[str, int]:
    each = total // count
    last = total - each * (count - 1)
    return {f"{stem}-{i:05d}-of-{count:05d}.{suffix}": each if i < count else last for i in range(1, count + 1)}


def _index(shards: dict[str, int | bytes], tensors_per_shard: int = 3) -> bytes:
    weight_map = {}
    for n, shard in enumerate(sorted(shards)):
        for t in range(tensors_per_shard):
            weight_map[f"model.layers.{n * tensors_per_shard + t}.weight"] = shard
    total = sum(v if isinstance(v, int) else len(v) for v in shards.values())
    return json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2).encode()


def _config(**values: Any) -> bytes:
    return json.dumps(values, indent=2).encode()


def _text_files(extra: dict[str, int] | None = None) -> dict[str, bytes | int]:
    files: dict[str, bytes | int] = {
        "generation_config.json": _config(do_sample=True, temperature=0.7),
        "tokenizer.json": 11_422_654,
        "tokenizer_config.json": _config(model_max_length=131072, chat_template="{{ messages }}"),
        "README.md": b"# model card\n" * 800,
        "LICENSE": b"Apache License 2.0\n" * 600,
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n" * 30,
    }
    files.update(extra or {})
    return files


def real_shapes() -> dict[str, tuple[dict[str, bytes | int], bool]]:
    """repo id -> (files, gated): the shipped catalog's repositories, plus an older one with both formats."""
    shapes: dict[str, tuple[dict[str, bytes | int], bool]] = {}

    shards = _shards(4, 16_060_556_376)
    shapes["meta-llama/Llama-3.1-8B-Instruct"] = (
        {
            **_text_files({"special_tokens_map.json": 296, "USE_POLICY.md": 4691}),
            "config.json": _config(
                architectures=["LlamaForCausalLM"], hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, max_position_embeddings=131072, torch_dtype="bfloat16", vocab_size=128256,
            ),
            **shards,
            "model.safetensors.index.json": _index(shards),
            "original/consolidated.00.pth": 16_060_617_592,
            "original/params.json": _config(dim=4096, n_layers=32),
            "original/tokenizer.model": 2_183_982,
        },
        True,
    )

    shards = _shards(10, 48_022_794_624)
    shapes["mistralai/Mistral-Small-3.2-24B-Instruct-2506"] = (
        {
            **_text_files({"SYSTEM_PROMPT.txt": 2_453, "tekken.json": 14_801_330}),
            "config.json": _config(
                architectures=["Mistral3ForConditionalGeneration"], torch_dtype="bfloat16",
                text_config={"hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 32,
                             "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 131072},
                vision_config={"hidden_size": 1024, "image_size": 1540},
            ),
            "params.json": _config(dim=5120, n_layers=40, vision_encoder={"image_size": 1540}),
            "consolidated.safetensors": 48_022_792_280,
            **shards,
            "model.safetensors.index.json": _index(shards),
            "preprocessor_config.json": _config(image_processor_type="PixtralImageProcessor"),
            "processor_config.json": _config(processor_class="PixtralProcessor"),
        },
        False,
    )

    shards = _shards(24, 236_441_378_816)
    shapes["Qwen/Qwen3-235B-A22B-Instruct-2507-FP8"] = (
        {
            **_text_files({"merges.txt": 1_671_853, "vocab.json": 2_776_833}),
            "config.json": _config(
                architectures=["Qwen3MoeForCausalLM"], hidden_size=4096, num_hidden_layers=94, num_attention_heads=64,
                num_key_value_heads=4, head_dim=128, max_position_embeddings=262144, torch_dtype="bfloat16",
                quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128]},
            ),
            **shards,
            "model.safetensors.index.json": _index(shards),
        },
        False,
    )

    shards = _shards(3, 8_044_981_760)
    shapes["Qwen/Qwen3-4B-Instruct-2507"] = (
        {
            **_text_files({"merges.txt": 1_671_853, "vocab.json": 2_776_833}),
            "config.json": _config(
                architectures=["Qwen3ForCausalLM"], hidden_size=2560, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, max_position_embeddings=262144, torch_dtype="bfloat16",
            ),
            **shards,
            "model.safetensors.index.json": _index(shards),
        },
        False,
    )

    shards = _shards(8, 30_912_000_000)
    shapes["Qwen/Qwen3.6-27B-FP8"] = (
        {
            **_text_files({"merges.txt": 1_671_853, "vocab.json": 2_776_833, "chat_template.jinja": 7_742}),
            "config.json": _config(
                architectures=["Qwen3_5ForConditionalGeneration"],
                text_config={"hidden_size": 5120, "num_hidden_layers": 64, "num_attention_heads": 24,
                             "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 262144},
                vision_config={"depth": 27, "hidden_size": 1152},
                torch_dtype="bfloat16",
                quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128]},
            ),
            **shards,
            "model.safetensors.index.json": _index(shards),
            "preprocessor_config.json": _config(image_processor_type="Qwen2VLImageProcessorFast"),
            "video_preprocessor_config.json": _config(video_processor_type="Qwen3VLVideoProcessor"),
        },
        False,
    )

    # An older repository that ships both formats (and both indexes), like many 2023-2024 models.
    safetensors, pytorch = _shards(3, 14_483_464_192), _shards(3, 14_483_498_524, "pytorch_model", "bin")
    shapes["mistralai/Mistral-7B-Instruct-v0.2"] = (
        {
            **_text_files({"special_tokens_map.json": 414, "tokenizer.model": 493_443}),
            "config.json": _config(
                architectures=["MistralForCausalLM"], hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, max_position_embeddings=32768, torch_dtype="bfloat16",
            ),
            **safetensors,
            "model.safetensors.index.json": _index(safetensors),
            **pytorch,
            "pytorch_model.bin.index.json": _index(pytorch),
        },
        False,
    )
    return shapes


def add_real_shapes(hub: FakeHub, scale: int = 1) -> dict[str, str]:
    """Add `real_shapes()` to `hub`, generated files `scale` times smaller; repo id -> commit."""
    commits = {}
    for repo_id, (files, gated) in real_shapes().items():
        commits[repo_id] = hub.add_repo(repo_id, scaled(files, scale), gated=gated)
    return commits


def scaled(files: dict[str, bytes | int], scale: int) -> dict[str, bytes | int]:
    """Generated files `scale` times smaller (at least one byte); real ones as they are."""
    return {p: max(1, c // scale) if isinstance(c, int) else c for p, c in files.items()}
