"""Asterisk emulator: an AMI server and FastAGI client over emulated SIP endpoints."""
