"""candlewax simulator."""
