"""Results: a model measured on held-out images, with intervals, calibration, confusion and figures."""
