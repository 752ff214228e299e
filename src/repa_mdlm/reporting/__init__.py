"""Reporting: Table 1, the formats, the report pages, the figures, the tables beside Table 1."""
