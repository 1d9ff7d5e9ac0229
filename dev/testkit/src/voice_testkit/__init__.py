"""What the tests and the benchmarks share: processes, the real stack, protocol doubles, speech.

Installed editable by scripts/setup.sh; it works inside the checkout only (ROOT in procs).
"""
