"""HTTP server: health check, and the gate every other route passes through."""
