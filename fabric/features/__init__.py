"""Feature views: declared in YAML, computed point-in-time correct, served and exported."""
