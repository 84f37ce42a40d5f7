"""Shipping: a trained model loaded, exported, used for prediction and served over HTTP."""
