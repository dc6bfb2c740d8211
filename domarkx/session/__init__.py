"""Snapshot and instance managers: the verbs behind the command line and the build."""
