"""From dense network outputs to nuclei: decoding, classes, merging tiles."""
