"""Contact-center figures (METRICS.md): pure math over the event log, and its queries."""
