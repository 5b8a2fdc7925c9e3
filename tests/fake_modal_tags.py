"""Failure injection for app tag writes in the fake control plane: a mixin of `FakeModal` (tests/fake_modal.py).

`fake.fail_set_tags_for(app_name, message, calls=(2,))` makes the 2nd AppSetTags for that app fail with a gRPC
error (the client raises `modal.exception.InvalidError(message)` for INVALID_ARGUMENT), leaving the other writes
alone: a deploy's "pending" mark (call 1) can succeed while its final record (call 2) fails, as on a network
cut half-way.
"""

from __future__ import annotations

from grpclib import GRPCError, Status


class TagFailuresMixin:
    """State: `self._tag_failures` (app name -> (message, the 1-based call numbers that fail, calls so far))."""

    def _reset_tags(self) -> None:
        self._tag_failures: dict[str, tuple[str, frozenset[int], list[int]]] = {}

    def fail_set_tags_for(self, app_name: str, message: str, *, calls: tuple[int, ...] = (1,)) -> None:
        self._tag_failures[app_name] = (message, frozenset(calls), [0])

    def _check_set_tags_failure(self, app_name: str) -> None:
        found = self._tag_failures.get(app_name)
        if found is None:
            return
        message, failing, seen = found
        seen[0] += 1
        if seen[0] in failing:
            raise GRPCError(Status.INVALID_ARGUMENT, message)
