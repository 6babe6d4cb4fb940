"""`srdd correlate`: does the scan predict what noise does? Correlations, verdicts, plots, reports."""
