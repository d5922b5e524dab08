"""Automatic call distribution: the skill-based routing engine (pure) and the call controller (AMI adapter)."""
