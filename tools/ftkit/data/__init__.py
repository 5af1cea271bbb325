"""Data checks: row validation against a JSON Schema plus chat-format checks (streaming)."""
