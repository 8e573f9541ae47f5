"""Source systems: reading them, and generating synthetic ones for demos and tests."""
