"""Inspection: what a model looks at (``zoo explain``) and what is wrong with the data (``zoo clean``)."""
