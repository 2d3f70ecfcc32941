"""Command line entry points: stunnerd, turncat, stunnerctl."""
