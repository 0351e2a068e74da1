"""See the package documentation; public names are re-exported here."""
