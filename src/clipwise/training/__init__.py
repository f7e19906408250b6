"""Training: the Lightning module and the run-from-config entry point."""
