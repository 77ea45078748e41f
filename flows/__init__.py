"""candlewax flows."""
