"""The simulated venues, the synthetic market and the sim runner."""

from engine import native as _native

_native.activate(__name__, __path__)
