"""candlewax: declarative real-time crypto market-data pipeline on Bytewax."""

__version__ = "0.1.0"
