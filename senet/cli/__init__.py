"""The ``senet`` command line. Thin: every command calls the library."""
