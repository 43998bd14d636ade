"""benchmarks/: speed and memory of one trial, measured against pyvene 0.1.8 (not tests)."""
