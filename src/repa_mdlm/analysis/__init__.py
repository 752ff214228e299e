"""Analysis: the runs table, intervals, paired families, Holm, power, controls, the verdict."""
