"""Benchmarks and studies on the development corpus, and the jobs that make the shipped model.
Run each as a module from the repository root: `python -m tools.bench` (the Makefile does).
"""
