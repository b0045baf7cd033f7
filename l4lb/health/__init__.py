"""Server health: the sans-IO hysteresis (`state`) and the probes that feed it (`checker`)."""
