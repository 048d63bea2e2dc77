"""The ``cqbnet`` command line."""
