"""Teachers: loading, re-tokenization, feature caches, and the teacher folders the workflow builds."""
