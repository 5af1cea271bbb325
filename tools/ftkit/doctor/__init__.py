"""`ftkit doctor`: the environment (versions, known-bad combinations) and the triage of a failed run.

Rules and log patterns are data (`env_rules.RULES`, `patterns.PATTERNS`); the classifiers are pure
functions over facts and text, so each rule and pattern is tested on its own.
"""
