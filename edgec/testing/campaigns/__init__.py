"""Campaigns: many generated hostile inputs against the CLI, counted by exit code
(``python3 -m edgec.testing.campaigns.<name> --help``)."""
