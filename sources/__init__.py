"""candlewax sources."""
