"""The improvement loop: retraining, comparison, watching, and simulated live traffic."""
