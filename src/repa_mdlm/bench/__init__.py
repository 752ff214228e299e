"""The benchmark and the lent-GPU check; only the CLI's `benchmark` command imports it."""
