"""The recipe pipeline: plan, execute the stages, export, gate the metrics, report."""
