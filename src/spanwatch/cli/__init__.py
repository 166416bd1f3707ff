"""The command line: wires settings, logging, the store and the daemon together."""
