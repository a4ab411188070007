"""Small plugins for the plugin host tests: well-behaved ones and ones that fail in every way."""
