"""Modal Dicts for the fake control plane: a mixin of `FakeModal` (tests/fake_modal.py).

Serves what `modal.Dict` (1.6.x) sends: get-or-create by name per environment, get, contains, len, update
and put (with `if_not_exists`, the server-side atomic "put if absent" a lock is built on), pop, contents
(keys/values/items), clear, delete, heartbeat. Keys and values stay as the serialized bytes the client sent,
so equal keys (the client serializes them deterministically) hit the same entry, as on Modal.
"""

from __future__ import annotations

import secrets

from grpclib import GRPCError, Status
from google.protobuf import empty_pb2
from modal_proto import api_pb2


class FakeDict:
    def __init__(self, dict_id: str, name: str, environment: str) -> None:
        self.dict_id = dict_id
        self.name = name
        self.environment = environment
        self.entries: dict[bytes, bytes] = {}  # serialized key -> serialized value, in insertion order


class DictMixin:
    """RPCs of modal.Dict. State: `self.dicts` (dict id -> FakeDict), `self.dict_names` ((env, name) -> id)."""

    def _reset_dicts(self) -> None:
        self.dicts: dict[str, FakeDict] = {}
        self.dict_names: dict[tuple[str, str], str] = {}

    def dict_entries(self, name: str, environment: str | None = None) -> dict[bytes, bytes]:
        """Test helper: the raw entries of the named Dict ({} when it does not exist)."""
        dict_id = self.dict_names.get((environment or self.default_environment, name))
        return dict(self.dicts[dict_id].entries) if dict_id else {}

    def _dict(self, dict_id: str) -> FakeDict:
        found = self.dicts.get(dict_id)
        if found is None:
            raise GRPCError(Status.NOT_FOUND, f"Dict with id '{dict_id}' not found")
        return found

    def _rpc_DictGetOrCreate(self, req: api_pb2.DictGetOrCreateRequest):
        env = self._env(req.environment_name)
        key = (env, req.deployment_name)
        with self._lock:
            if key not in self.dict_names:
                if req.object_creation_type not in (
                    api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
                    api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS,
                ):
                    raise GRPCError(Status.NOT_FOUND, f"Dict '{req.deployment_name}' not found in environment '{env}'")
                dict_id = self._new_dict_id()
                self.dicts[dict_id] = FakeDict(dict_id, req.deployment_name, env)
                self.dict_names[key] = dict_id
                for entry in req.data:
                    self.dicts[dict_id].entries[entry.key] = entry.value
            elif req.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS:
                raise GRPCError(Status.ALREADY_EXISTS, f"Dict '{req.deployment_name}' already exists")
            dict_id = self.dict_names[key]
        return api_pb2.DictGetOrCreateResponse(
            dict_id=dict_id, metadata=api_pb2.DictMetadata(name=req.deployment_name)
        )

    def _new_dict_id(self) -> str:
        return f"di-{secrets.token_hex(11)}"

    def _rpc_DictHeartbeat(self, req: api_pb2.DictHeartbeatRequest):
        self._dict(req.dict_id)
        return empty_pb2.Empty()

    def _rpc_DictGet(self, req: api_pb2.DictGetRequest):
        with self._lock:
            entries = self._dict(req.dict_id).entries
            if req.key in entries:
                return api_pb2.DictGetResponse(found=True, value=entries[req.key])
        return api_pb2.DictGetResponse(found=False)

    def _rpc_DictContains(self, req: api_pb2.DictContainsRequest):
        with self._lock:
            return api_pb2.DictContainsResponse(found=req.key in self._dict(req.dict_id).entries)

    def _rpc_DictLen(self, req: api_pb2.DictLenRequest):
        with self._lock:
            return api_pb2.DictLenResponse(len=len(self._dict(req.dict_id).entries))

    def _rpc_DictUpdate(self, req: api_pb2.DictUpdateRequest):
        with self._lock:
            entries = self._dict(req.dict_id).entries
            if req.if_not_exists and any(update.key in entries for update in req.updates):
                return api_pb2.DictUpdateResponse(created=False)
            for update in req.updates:
                entries[update.key] = update.value
        return api_pb2.DictUpdateResponse(created=True)

    def _rpc_DictPop(self, req: api_pb2.DictPopRequest):
        with self._lock:
            entries = self._dict(req.dict_id).entries
            if req.key in entries:
                return api_pb2.DictPopResponse(found=True, value=entries.pop(req.key))
        return api_pb2.DictPopResponse(found=False)

    def _rpc_DictContents(self, req: api_pb2.DictContentsRequest):
        with self._lock:
            entries = list(self._dict(req.dict_id).entries.items())
        return [
            api_pb2.DictEntry(key=key if req.keys else b"", value=value if req.values else b"")
            for key, value in entries
        ]

    def _rpc_DictClear(self, req: api_pb2.DictClearRequest):
        with self._lock:
            self._dict(req.dict_id).entries.clear()
        return empty_pb2.Empty()

    def _rpc_DictDelete(self, req: api_pb2.DictDeleteRequest):
        with self._lock:
            found = self._dict(req.dict_id)
            del self.dicts[req.dict_id]
            self.dict_names.pop((found.environment, found.name), None)
        return empty_pb2.Empty()
