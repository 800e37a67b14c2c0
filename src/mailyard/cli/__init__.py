"""The `mailyard` command: one CLI for everything the panel does."""
