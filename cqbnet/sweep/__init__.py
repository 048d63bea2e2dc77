"""Sweeps of training runs: paper 000's pilot protocol and any list of labelling plans, run through Ray."""
