"""The performance model: hardware presets, placement and estimates, sweeps and their plots."""
