"""The entry points the Snakemake rules call, their options, status, the results lock, export."""
