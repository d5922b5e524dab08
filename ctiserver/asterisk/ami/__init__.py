"""Asterisk Manager Interface: codec (frames <-> messages) and asyncio client."""
