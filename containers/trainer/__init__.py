"""The shared trainer: `python -m ftlaunch.containers.trainer --spec SPEC.json`, the same on every backend.

It reads the resolved spec, loads model and data, applies the technique, trains, evaluates, and writes
metrics.jsonl, summary.json, weights/ and, last, manifest.json into the output directory that the
backend's container contract names (see contract.py).
"""
