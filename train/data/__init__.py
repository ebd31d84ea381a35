"""Datasets and augmentation for training and evaluation."""
