"""Reproducible training pipeline for the shipped plate detector and plate OCR.

Only `cli`, `train_ocr`, `train_detector` and `export` import TensorFlow (the `train`
extra), and only inside their functions; the generators use numpy, Pillow and OpenCV so the
tests can use them.
"""
