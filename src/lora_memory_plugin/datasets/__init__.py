"""Deterministic synthetic datasets (PhoneBook-style facts) for calibration, tests, benchmarks."""
