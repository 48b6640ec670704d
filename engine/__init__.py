"""The pure engine core (no IO) and the runtime around it (journal, runner, replay)."""

from engine import native as _native

_native.activate(__name__, __path__)
