"""`ftkit recipe new`: fork a shipped recipe into a new one with your data."""
