"""Automatic call distribution: skill-based routing engine (pure) and call controller."""
