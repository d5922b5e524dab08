"""Asterisk emulator: a real AMI server and FastAGI client over emulated SIP endpoints, plus transcript tooling."""
