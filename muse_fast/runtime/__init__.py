"""Running the network: engines (one registry) and tiled prediction."""
