"""Durable operations: background work kept in the store, so it survives a restart, shows on every
instance, and can be cancelled from any of them (bulk replay, ownership handshakes, delayed sweeps)."""

from relay.operations.kinds import Handshake, Redrive, ReleaseHeld
from relay.operations.recover import Recover
from relay.operations.runner import OperationKind, OperationRunner, Step

__all__ = ["Handshake", "OperationKind", "OperationRunner", "Recover", "Redrive", "ReleaseHeld", "Step"]
