"""A small process-compose-compatible runner for the development stack.

Used when `process-compose` is not on PATH. It executes the same
`process-compose.yaml` (the subset of keys it supports; any other key is refused
with a clear error) and runs detached, controlled by `scripts/dev-*.sh`:

    .venv/bin/devstack --help     (installed by scripts/setup.sh; or python -m devstack)
"""
