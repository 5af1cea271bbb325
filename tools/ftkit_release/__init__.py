"""Release tooling for maintainers (image builds, locks, digests pinned into recipes): not part of the ftkit runtime."""
