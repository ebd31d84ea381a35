"""Slide and image input: readers (one per backend), level choice and resampling, tiling."""
