"""`srdd calibrate`: from a scan to per-layer noise multipliers, zones and an experiment suite."""
