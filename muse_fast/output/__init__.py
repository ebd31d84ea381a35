"""Writers for detections: QuPath GeoJSON and CSV, always via a temporary file and an atomic rename."""
