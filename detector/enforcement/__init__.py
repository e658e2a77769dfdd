"""Enforcement: hooks that throttle and release functions, and their policy.

:class:`Enforcer` is what the daemon and the API talk to.
"""

from detector.enforcement.audit import ActionLog, ActionRecord, MemoryActionLog
from detector.enforcement.base import ActionConflict, Hook, HookError, UnknownAction
from detector.enforcement.policy import Policy
from detector.enforcement.service import Enforcer, build_enforcer

__all__ = [
    "ActionConflict",
    "ActionLog",
    "ActionRecord",
    "Enforcer",
    "Hook",
    "HookError",
    "MemoryActionLog",
    "Policy",
    "UnknownAction",
    "build_enforcer",
]
