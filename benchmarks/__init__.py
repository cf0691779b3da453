"""On-demand benchmarks (not part of the test suite): `.venv/bin/python -m benchmarks.mail`."""
