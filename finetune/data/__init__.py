"""The data layer: scanning image folders, splitting them, loading images and built-in data sets."""
