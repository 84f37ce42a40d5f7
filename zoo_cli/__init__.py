"""The ``zoo`` command line: a thin layer that parses, calls zoo / finetune, and prints."""
