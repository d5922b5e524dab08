"""Asterisk protocol layer: the AMI client and the FastAGI server (bytes <-> typed messages)."""
