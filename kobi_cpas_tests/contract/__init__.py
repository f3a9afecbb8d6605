"""Contract tests' support: Meta's own definitions (the official Python Business SDK), test-only."""
