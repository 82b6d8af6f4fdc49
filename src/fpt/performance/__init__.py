"""Performance: fpt's hand-written CPU paths for the frozen body (`ops`), and `fpt bench` with its rendering."""
