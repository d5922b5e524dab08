"""Agent desktop: websocket protocol, screen-pop and call controls."""
