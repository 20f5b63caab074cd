"""Command-line interface: `lmforge VERB ...`; one module per verb, each a thin layer over the library."""
