"""candlewax sinks."""
