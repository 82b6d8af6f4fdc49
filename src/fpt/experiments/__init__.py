"""Experiments built on the core: resumable sweeps (`fpt sweep`), reports and plots (`fpt report`), the demo."""
