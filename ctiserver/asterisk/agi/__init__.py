"""FastAGI: codec (environment block, result lines) and asyncio server."""
