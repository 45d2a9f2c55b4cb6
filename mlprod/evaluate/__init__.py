"""Evaluation: how good a model's scores are, with honest intervals, and a report for people."""
