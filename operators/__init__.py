"""candlewax operators."""
