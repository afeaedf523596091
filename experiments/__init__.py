"""Experiment presets, benchmarks and (later) sweeps for fedrl."""
