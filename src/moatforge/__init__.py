"""moatforge: turn a company's own data into its own cheap, fast model, on Ray."""

__version__ = "0.1.0"
