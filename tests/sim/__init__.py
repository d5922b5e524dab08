"""Tests of the Asterisk emulator (ctiserver.sim)."""
