"""IVR: declarative call flows and their executor over FastAGI."""
