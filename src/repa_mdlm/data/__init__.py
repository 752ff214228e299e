"""Data: corpus sources, the tokenizer, packed token arrays and their manifest, synthetic text."""
