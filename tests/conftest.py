"""Shared fixtures. The PostgreSQL cluster is a plugin so one server serves the whole session."""

pytest_plugins = ["pgcluster"]
