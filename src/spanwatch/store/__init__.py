"""The store layer: all SQL spanwatch runs against the shared event store."""
