"""Evaluation: benchmark definitions, answer extraction, scoring, the runner and CLI."""
