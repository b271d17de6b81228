"""The command line: a thin layer over the library that turns NurtureError into a message and exit 1."""
