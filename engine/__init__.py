"""The pure engine core (no IO) and the runtime around it (journal, runner, replay)."""
